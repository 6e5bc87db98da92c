package federation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"
)

// Bounds on a key response, which its server writes as it likes: real
// servers publish one current key and a handful of retired ones.
const (
	maxVerifyKeys    = 16
	maxOldVerifyKeys = 64
	// maxKeyVersionLen: the spec gives key versions no length of their own,
	// so the opaque-identifier bound (255) applies. Real servers use more than
	// 64 characters: Complement's are "complement_" and 64 hex digits.
	maxKeyVersionLen = 255 - len("ed25519:")
	// maxNotarySignatures bounds the notary signatures tried on one response.
	maxNotarySignatures = 4
)

// validKeyID: "ed25519:" and a version of [a-zA-Z0-9_] (the spec's grammar;
// '-' too, as validKeyVersion explains), at most maxKeyVersionLen long. Only
// ed25519 keys are stored: nothing else can be verified.
func validKeyID(keyID id.KeyID) bool {
	version, ok := strings.CutPrefix(string(keyID), string(id.KeyAlgorithmEd25519)+":")
	return ok && len(version) <= maxKeyVersionLen && validKeyVersion(version)
}

// signedForm returns what a signature on the JSON object raw covers: raw
// without "signatures" and "unsigned", canonicalized. Computed once per
// object, however many signatures are checked against it.
func signedForm(raw json.RawMessage) ([]byte, error) {
	msg, err := sjson.DeleteBytes(bytes.Clone(raw), "signatures")
	if err == nil {
		msg, err = sjson.DeleteBytes(msg, "unsigned")
	}
	if err == nil {
		msg, err = canonicaljson.CanonicalJSON(msg)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not canonicalizable: %v", ErrBadKeyResponse, err)
	}
	return msg, nil
}

// verifyCanonical checks server's signature with keyID over the signed form msg.
func verifyCanonical(sigs map[string]map[id.KeyID]string, server string, keyID id.KeyID, key id.SigningKey, msg []byte) error {
	sig, ok := sigs[server][keyID]
	if !ok {
		return fmt.Errorf("%w: no signature by %s", ErrBadKeyResponse, keyID)
	}
	if err := signutil.VerifyJSONCanonical(key, sig, msg); err != nil {
		return fmt.Errorf("%w: signature by %s: %v", ErrBadKeyResponse, keyID, err)
	}
	return nil
}
