package federation

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// Key files under the data directory.
const (
	SigningKeyFile    = "signing.key"      // the current key, Synapse's "ed25519 <version> <seed>"
	OldSigningKeysDir = "old_signing_keys" // retired public keys, see LoadOldKeys
)

// OldKey is a retired public key: events it signed before ExpiredTS stay verifiable.
type OldKey struct {
	ID        id.KeyID
	Key       id.SigningKey
	ExpiredTS time.Time
}

// LoadOldKeys reads every file in dir (missing dir: none). Each non-empty
// line not starting with # is "ed25519 <version> <unpadded base64 public key>
// <expired_ts in ms>", as RotateSigningKey writes it.
func LoadOldKeys(dir string) ([]OldKey, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading old signing keys: %w", err)
	}
	var out []OldKey
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("reading old signing keys: %w", err)
		}
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, err := parseOldKey(line)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s:%d: %w", path, n, err)
			}
			out = append(out, k)
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func parseOldKey(line string) (OldKey, error) {
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != string(id.KeyAlgorithmEd25519) {
		return OldKey{}, errors.New(`want "ed25519 <version> <public key> <expired_ts ms>"`)
	}
	if !validKeyVersion(f[1]) {
		return OldKey{}, fmt.Errorf("invalid key version %q", f[1])
	}
	if raw, err := base64.RawStdEncoding.DecodeString(f[2]); err != nil || len(raw) != ed25519.PublicKeySize {
		return OldKey{}, errors.New("public key must be 32 bytes of unpadded base64")
	}
	ts, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || ts <= 0 {
		return OldKey{}, fmt.Errorf("invalid expired_ts %q", f[3])
	}
	return OldKey{ID: id.NewKeyID(id.KeyAlgorithmEd25519, f[1]), Key: id.SigningKey(f[2]), ExpiredTS: time.UnixMilli(ts)}, nil
}

// validKeyVersion: the spec's [a-zA-Z0-9_] (non-empty), plus '-', which
// keys generated before newSigningKey (mautrix's URL-safe base64 IDs) carry.
func validKeyVersion(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// RotateSigningKey retires the current key under dataDir (its public half
// goes to old_signing_keys/ with expired_ts = now) and generates a new one.
// Run it while the server is stopped; the server then publishes both.
func RotateSigningKey(dataDir string, now time.Time) (*mfed.SigningKey, error) {
	keyPath := filepath.Join(dataDir, SigningKeyFile)
	old, err := LoadOrGenerateSigningKey(keyPath)
	if err != nil {
		return nil, err
	}
	_, version := old.ID.Parse()
	oldDir := filepath.Join(dataDir, OldSigningKeysDir)
	if err := os.MkdirAll(oldDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", oldDir, err)
	}
	line := fmt.Sprintf("ed25519 %s %s %d\n", version, old.Pub, now.UnixMilli())
	if err := os.WriteFile(filepath.Join(oldDir, version+".key"), []byte(line), 0o600); err != nil {
		return nil, fmt.Errorf("retiring key %s: %w", old.ID, err)
	}
	key := newSigningKey()
	for key.ID == old.ID { // a short version can collide
		key = newSigningKey()
	}
	tmp := keyPath + ".new"
	if err := os.WriteFile(tmp, []byte(key.SynapseString()+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing new signing key: %w", err)
	}
	if err := os.Rename(tmp, keyPath); err != nil {
		return nil, fmt.Errorf("installing new signing key: %w", err)
	}
	return key, nil
}

// newSigningKey generates a key whose ID follows the spec's version grammar
// [a-zA-Z0-9_] (mautrix's generated IDs may contain '-').
func newSigningKey() *mfed.SigningKey {
	k := mfed.GenerateSigningKey()
	pub, _ := base64.RawStdEncoding.DecodeString(string(k.Pub))
	k.ID = id.NewKeyID(id.KeyAlgorithmEd25519, fmt.Sprintf("a_%x", pub[:4]))
	return k
}

// KeyRing is this server's keys: the signing key and the retired ones.
type KeyRing struct {
	ServerName string
	Key        *mfed.SigningKey
	Old        []OldKey
	// Validity is how far ahead valid_until_ts lies in published responses.
	Validity time.Duration
}

// serverKeys is mautrix's ServerKeyResponse with old_verify_keys always
// present, {} when there are none (as Synapse answers; other servers'
// parsers and Complement expect the key), where mautrix omits an empty one.
type serverKeys struct {
	ServerName    string                            `json:"server_name"`
	VerifyKeys    map[id.KeyID]mfed.ServerVerifyKey `json:"verify_keys"`
	OldVerifyKeys map[id.KeyID]mfed.OldVerifyKey    `json:"old_verify_keys"`
	Signatures    map[string]map[id.KeyID]string    `json:"signatures,omitempty"`
	ValidUntilTS  jsontime.UnixMilli                `json:"valid_until_ts"`
}

// Response is our signed GET /_matrix/key/v2/server answer, built at now.
func (k *KeyRing) Response(now time.Time) (json.RawMessage, error) {
	skr := &serverKeys{
		ServerName:    k.ServerName,
		VerifyKeys:    map[id.KeyID]mfed.ServerVerifyKey{k.Key.ID: {Key: k.Key.Pub}},
		OldVerifyKeys: make(map[id.KeyID]mfed.OldVerifyKey, len(k.Old)),
		ValidUntilTS:  jsontime.UM(now.Add(k.Validity)),
	}
	for _, o := range k.Old {
		if o.ID != k.Key.ID {
			skr.OldVerifyKeys[o.ID] = mfed.OldVerifyKey{Key: o.Key, ExpiredTS: jsontime.UM(o.ExpiredTS)}
		}
	}
	sig, err := k.Key.SignJSON(skr)
	if err != nil {
		return nil, fmt.Errorf("signing key response: %w", err)
	}
	skr.Signatures = map[string]map[id.KeyID]string{k.ServerName: {k.Key.ID: sig}}
	// Served as canonical JSON, as Synapse does: a verifier may check the
	// signature against the body as received, minus "signatures".
	return canonicaljson.Marshal(skr)
}

// Lookup returns one of our own keys and until when it is valid (the
// current key: now + Validity; an old one: its expiry).
func (k *KeyRing) Lookup(keyID id.KeyID, now time.Time) (id.SigningKey, time.Time, bool) {
	if keyID == k.Key.ID {
		return k.Key.Pub, now.Add(k.Validity), true
	}
	for _, o := range k.Old {
		if o.ID == keyID {
			return o.Key, o.ExpiredTS, true
		}
	}
	return "", time.Time{}, false
}

// CoSign adds our signature to a signed JSON object (a notary co-signing
// another server's key response) and returns the result. Like every
// signature it covers the object without "signatures" and "unsigned"
// (mautrix's SignJSON leaves "unsigned" in, which no verifier expects).
func (k *KeyRing) CoSign(raw json.RawMessage) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("co-signing: %w", err)
	}
	msg, err := signedForm(raw)
	if err != nil {
		return nil, fmt.Errorf("co-signing: %w", err)
	}
	sig := base64.RawStdEncoding.EncodeToString(k.Key.SignCanonicalJSON(msg))
	sigs := map[string]map[string]string{}
	if s, ok := obj["signatures"]; ok {
		if err := json.Unmarshal(s, &sigs); err != nil {
			return nil, fmt.Errorf("co-signing: signatures: %w", err)
		}
	}
	if sigs[k.ServerName] == nil {
		sigs[k.ServerName] = map[string]string{}
	}
	sigs[k.ServerName][string(k.Key.ID)] = sig
	if obj["signatures"], err = json.Marshal(sigs); err != nil {
		return nil, err
	}
	return json.Marshal(obj)
}
