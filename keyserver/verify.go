package keyserver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/json/jsontext"
	"fmt"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"
)

// canonical re-encodes a JSON value as canonical JSON; an error means it is not valid JSON.
func canonical(raw []byte) ([]byte, error) {
	v := jsontext.Value(bytes.Clone(raw))
	if err := canonicaljson.Canonicalize(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// isKey reports whether s is an unpadded base64 32-byte key (ed25519 or curve25519).
func isKey(s string) bool {
	b, err := base64.RawStdEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// verifySignature checks that obj carries a valid signature by signer with
// the ed25519 key keyName (the part after "ed25519:") whose public key is pub.
func verifySignature(obj json.RawMessage, signer, keyName, pub string) error {
	if !isKey(pub) {
		return fmt.Errorf("signing key ed25519:%s is not a valid ed25519 key", keyName)
	}
	ok, err := signatures.VerifySignatureJSON(obj, id.UserID(signer), keyName, id.Ed25519(pub))
	if err != nil {
		return fmt.Errorf("signature by %s ed25519:%s: %w", signer, keyName, err)
	}
	if !ok {
		return fmt.Errorf("signature by %s ed25519:%s does not verify", signer, keyName)
	}
	return nil
}

// withoutSignatures is the canonical JSON of an object minus its signatures
// and unsigned fields: what a signature covers.
func withoutSignatures(raw []byte) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	delete(obj, "signatures")
	delete(obj, "unsigned")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return canonical(b)
}

// signaturesOf extracts the "signatures" object of a signed JSON object.
func signaturesOf(raw []byte) map[string]map[string]string {
	var obj struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	_ = json.Unmarshal(raw, &obj)
	return obj.Signatures
}

// mergeSignatures returns raw with extra signatures added (and without
// unsigned); unsigned, when non-nil, replaces the unsigned field.
func mergeSignatures(raw []byte, extra map[string]map[string]string, unsigned map[string]any) (json.RawMessage, error) {
	if len(extra) == 0 && unsigned == nil {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	if len(extra) > 0 {
		sigs := signaturesOf(raw)
		if sigs == nil {
			sigs = map[string]map[string]string{}
		}
		for u, m := range extra {
			if sigs[u] == nil {
				sigs[u] = map[string]string{}
			}
			for k, v := range m {
				sigs[u][k] = v
			}
		}
		b, err := json.Marshal(sigs)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = b
	}
	if unsigned != nil {
		b, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = b
	}
	return json.Marshal(obj)
}
