package keyserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// DeviceSigningRequest is the body of POST /keys/device_signing/upload (the
// auth field is handled by the HTTP layer).
type DeviceSigningRequest struct {
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	UserSigningKey json.RawMessage `json:"user_signing_key,omitempty"`
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

type crossSigningKeyBody struct {
	UserID string            `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// parseCrossSigningKey checks a cross-signing key's shape: owner, usage and a
// single ed25519 key named by itself.
func parseCrossSigningKey(raw json.RawMessage, userID, usage string) (pub string, err error) {
	var k crossSigningKeyBody
	if err := mxhttp.DecodeJSON(raw, &k); err != nil {
		return "", err
	}
	if k.UserID != userID {
		return "", mxhttp.InvalidParam("%s key: user_id must be %s", usage, userID)
	}
	if !slices.Contains(k.Usage, usage) {
		return "", mxhttp.InvalidParam("%s key: usage must include %q", usage, usage)
	}
	if len(k.Keys) != 1 {
		return "", mxhttp.InvalidParam("%s key: keys must hold exactly one key", usage)
	}
	for kid, v := range k.Keys {
		name, ok := strings.CutPrefix(kid, "ed25519:")
		if !ok || name != v || !isKey(v) {
			return "", mxhttp.InvalidParam("%s key: keys must be {\"ed25519:<key>\": \"<key>\"}", usage)
		}
		pub = v
	}
	return pub, nil
}

type preparedSigningKeys struct {
	keys      map[string]storage.CrossSigningKey
	unchanged bool // every uploaded key equals the stored one
	hasMaster bool // a master key is already stored
}

// prepareDeviceSigning validates an upload against the stored keys.
func (s *Service) prepareDeviceSigning(ctx context.Context, userID string, req *DeviceSigningRequest) (*preparedSigningKeys, error) {
	stored, err := s.store.CrossSigningKeys(ctx, []string{userID})
	if err != nil {
		return nil, err
	}
	existing := stored[userID]
	p := &preparedSigningKeys{keys: map[string]storage.CrossSigningKey{}, unchanged: true}
	_, p.hasMaster = existing["master"]
	masterPub := existing["master"].PublicKey
	parts := []struct {
		typ string
		raw json.RawMessage
	}{{"master", req.MasterKey}, {"self_signing", req.SelfSigningKey}, {"user_signing", req.UserSigningKey}}
	for _, part := range parts {
		if !present(part.raw) {
			continue
		}
		pub, err := parseCrossSigningKey(part.raw, userID, part.typ)
		if err != nil {
			return nil, err
		}
		c, err := withoutUnsigned(part.raw)
		if err != nil {
			return nil, err
		}
		if part.typ == "master" {
			masterPub = pub
		} else {
			if masterPub == "" {
				return nil, mxhttp.MissingParam("No master key is available to check the %s key", part.typ)
			}
			if err := verifySignature(part.raw, userID, masterPub, masterPub); err != nil {
				return nil, mxhttp.InvalidSignature("%s key is not signed by the master key: %v", part.typ, err)
			}
		}
		if old, ok := existing[part.typ]; !ok || !bytes.Equal(old.KeyJSON, c) {
			p.unchanged = false
		}
		p.keys[part.typ] = storage.CrossSigningKey{PublicKey: pub, KeyJSON: c}
	}
	if len(p.keys) == 0 {
		return nil, mxhttp.MissingParam("No keys given")
	}
	return p, nil
}

// DeviceSigningNeedsAuth reports whether an upload must pass user-interactive
// auth: when the user already has a master key and the upload changes any of
// their cross-signing keys. Uploading the first keys, or exactly the stored
// ones again (a client retrying), needs none. Invalid uploads return their error.
func (s *Service) DeviceSigningNeedsAuth(ctx context.Context, userID string, req *DeviceSigningRequest) (bool, error) {
	p, err := s.prepareDeviceSigning(ctx, userID, req)
	if err != nil {
		return false, err
	}
	return p.hasMaster && !p.unchanged, nil
}

// UploadDeviceSigningKeys stores cross-signing keys (the caller has done any
// user-interactive auth DeviceSigningNeedsAuth asked for).
func (s *Service) UploadDeviceSigningKeys(ctx context.Context, userID string, req *DeviceSigningRequest) error {
	p, err := s.prepareDeviceSigning(ctx, userID, req)
	if err != nil {
		return err
	}
	if p.unchanged {
		return nil
	}
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	err = s.store.SetCrossSigningKeys(ctx, userID, p.keys, pos, s.now().UnixMilli())
	finish()
	if err != nil {
		return fmt.Errorf("storing cross-signing keys: %w", err)
	}
	s.deviceListChanged(ctx, userID, pos)
	s.announce(ctx, userID)
	return nil
}

// SignaturesResponse is the answer to POST /keys/signatures/upload.
type SignaturesResponse struct {
	Failures map[string]map[string]any `json:"failures"`
}

// UploadSignatures handles POST /keys/signatures/upload: signer adds
// signatures to their own devices (with their self-signing key), to their
// master key (with a device), or to another user's master key (with their
// user-signing key). Each signature is verified; failures are reported per key.
func (s *Service) UploadSignatures(ctx context.Context, signer string, req map[string]map[string]json.RawMessage) (*SignaturesResponse, error) {
	resp := &SignaturesResponse{Failures: map[string]map[string]any{}}
	fail := func(user, key string, e *mxhttp.Error) {
		if resp.Failures[user] == nil {
			resp.Failures[user] = map[string]any{}
		}
		resp.Failures[user][key] = map[string]string{"errcode": e.Code, "error": e.Message}
	}
	users := make([]string, 0, len(req))
	for u := range req {
		users = append(users, u)
	}
	sort.Strings(users)
	local, remote, err := s.splitUsers(users)
	if err != nil {
		return nil, err
	}
	all := append([]string{signer}, local...)
	cross, err := s.store.CrossSigningKeys(ctx, all)
	if err != nil {
		return nil, err
	}
	// Remote users' master keys, for signatures by signer's user-signing key
	// (remotesignatures.go).
	var remoteUsers []string
	for _, us := range remote {
		remoteUsers = append(remoteUsers, us...)
	}
	sort.Strings(remoteUsers)
	remoteCross, err := s.remoteMasterKeys(ctx, signer, remoteUsers)
	if err != nil {
		return nil, err
	}
	for u, c := range remoteCross {
		cross[u] = c
	}
	devs, err := s.store.QueryDeviceKeys(ctx, []string{signer})
	if err != nil {
		return nil, err
	}
	mine := cross[signer]
	var good []storage.KeySignature
	for _, target := range append(local, remoteUsers...) {
		for keyID, raw := range req[target] {
			sigs, e := s.checkSignedKey(signer, target, keyID, raw, mine, cross[target], devs[signer])
			if e != nil {
				fail(target, keyID, e)
				continue
			}
			good = append(good, sigs...)
		}
	}
	if len(good) > 0 {
		pos, finish, err := s.stream.Allocate()
		if err != nil {
			return nil, err
		}
		// Signing another user's master key changes the signer's view (their
		// other devices must learn of it), not the target's.
		err = s.store.AddSignatures(ctx, good, []string{signer}, pos)
		finish()
		if err != nil {
			return nil, fmt.Errorf("storing signatures: %w", err)
		}
		s.deviceListChanged(ctx, signer, pos)
		s.announce(ctx, signer)
	}
	return resp, nil
}

// checkSignedKey verifies the signatures signer added to target's key keyID
// and returns them for storage.
func (s *Service) checkSignedKey(signer, target, keyID string, raw json.RawMessage,
	signerCross, targetCross map[string]storage.CrossSigningKey, signerDevices map[string][]byte) ([]storage.KeySignature, *mxhttp.Error) {
	var stored []byte
	var signingKeys map[string]string // "ed25519:<name>" → public key allowed to sign this target
	switch {
	case target == signer && signerDevices[keyID] != nil:
		ssk, ok := signerCross["self_signing"]
		if !ok {
			return nil, mxhttp.MissingParam("No self-signing key to sign devices with")
		}
		stored = signerDevices[keyID]
		signingKeys = map[string]string{"ed25519:" + ssk.PublicKey: ssk.PublicKey}
	case target == signer && signerCross["master"].PublicKey == keyID:
		stored = signerCross["master"].KeyJSON
		signingKeys = map[string]string{}
		for dev, dk := range signerDevices {
			var body deviceKeysBody
			if json.Unmarshal(dk, &body) == nil {
				signingKeys["ed25519:"+dev] = body.Keys["ed25519:"+dev]
			}
		}
	case target != signer && targetCross["master"].PublicKey == keyID:
		usk, ok := signerCross["user_signing"]
		if !ok {
			return nil, mxhttp.MissingParam("No user-signing key to sign other users with")
		}
		stored = targetCross["master"].KeyJSON
		signingKeys = map[string]string{"ed25519:" + usk.PublicKey: usk.PublicKey}
	default:
		return nil, mxhttp.NotFound("Unknown key %s of %s", keyID, target)
	}
	a, err1 := withoutSignatures(raw)
	b, err2 := withoutSignatures(stored)
	if err1 != nil || err2 != nil {
		return nil, mxhttp.BadJSON("Signed key is not a JSON object")
	}
	if !bytes.Equal(a, b) {
		return nil, mxhttp.InvalidSignature("Signed object does not match the stored key")
	}
	var out []storage.KeySignature
	for kid, sig := range signaturesOf(raw)[signer] {
		pub, ok := signingKeys[kid]
		if !ok {
			continue // signatures already on the key, or by keys that may not sign it
		}
		if err := verifySignature(raw, signer, strings.TrimPrefix(kid, "ed25519:"), pub); err != nil {
			return nil, mxhttp.InvalidSignature("%v", err)
		}
		out = append(out, storage.KeySignature{TargetUserID: target, TargetKeyID: keyID, SignerUserID: signer, SignerKeyID: kid, Signature: sig})
	}
	if len(out) == 0 {
		return nil, mxhttp.InvalidSignature("No signature by a key allowed to sign this key")
	}
	return out, nil
}
