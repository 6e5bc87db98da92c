package tests

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
)

// testDevice holds a device's identity keys for hand-made key uploads.
type testDevice struct {
	user, device string
	priv         ed25519.PrivateKey
	ed, curve    string
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b64(b)
}

func newTestDevice(user, device string) *testDevice {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &testDevice{user: user, device: device, priv: priv, ed: b64(pub), curve: randomKey()}
}

func newSigningKey() (ed25519.PrivateKey, string) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return priv, b64(pub)
}

// sign adds a signature by (user, keyName) over obj (minus signatures/unsigned).
func sign(t testing.TB, obj map[string]any, user, keyName string, priv ed25519.PrivateKey) map[string]any {
	t.Helper()
	body := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			body[k] = v
		}
	}
	canon, err := canonicaljson.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
	}
	mine, _ := sigs[user].(map[string]any)
	if mine == nil {
		mine = map[string]any{}
	}
	mine["ed25519:"+keyName] = b64(ed25519.Sign(priv, canon))
	sigs[user] = mine
	obj["signatures"] = sigs
	return obj
}

func (d *testDevice) deviceKeys(t testing.TB) map[string]any {
	return sign(t, map[string]any{
		"user_id": d.user, "device_id": d.device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"ed25519:" + d.device: d.ed, "curve25519:" + d.device: d.curve},
	}, d.user, d.device, d.priv)
}

func (d *testDevice) signedKey(t testing.TB, fallback bool) map[string]any {
	k := map[string]any{"key": randomKey()}
	if fallback {
		k["fallback"] = true
	}
	return sign(t, k, d.user, d.device, d.priv)
}

// oneTimeKeys makes n signed one-time keys with IDs prefix0..prefixN.
func (d *testDevice) oneTimeKeys(t testing.TB, prefix string, n int) map[string]any {
	out := map[string]any{}
	for i := 0; i < n; i++ {
		out["signed_curve25519:"+prefix+string(rune('A'+i/26))+string(rune('a'+i%26))] = d.signedKey(t, false)
	}
	return out
}

// keysCall makes an authenticated request and decodes the JSON answer,
// which must be an object.
func keysCall(t testing.TB, c *mautrix.Client, method, path string, body any) (int, map[string]any) {
	t.Helper()
	r := clientCall(t, c, method, path, body)
	if r.Body == nil {
		t.Fatalf("%s %s: answer is not a JSON object: %s", method, path, r.Raw)
	}
	return r.Status, r.Body
}

func keysMustCall(t testing.TB, c *mautrix.Client, method, path string, body any) map[string]any {
	t.Helper()
	status, out := keysCall(t, c, method, path, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s = %d %v", method, path, status, out)
	}
	return out
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
