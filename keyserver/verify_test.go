package keyserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/crypto/canonicaljson"
)

func TestVerifySignature(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pubB64 := base64.RawStdEncoding.EncodeToString(pub)
	body := map[string]any{"key": "abc", "unsigned": map[string]any{"x": 1}}
	canon, _ := canonicaljson.Marshal(map[string]any{"key": "abc"})
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, canon))
	signed := func(s string) json.RawMessage {
		b := map[string]any{}
		for k, v := range body {
			b[k] = v
		}
		b["signatures"] = map[string]any{"@a:x": map[string]string{"ed25519:DEV": s}}
		raw, _ := json.Marshal(b)
		return raw
	}
	cases := []struct {
		name string
		obj  json.RawMessage
		pub  string
		ok   bool
	}{
		{"valid (unsigned ignored)", signed(sig), pubB64, true},
		{"signature not base64", signed("!!"), pubB64, false},
		{"signature too short", signed("AAAA"), pubB64, false},
		{"no signature", json.RawMessage(`{"key":"abc"}`), pubB64, false},
		{"public key too short", signed(sig), "AAAA", false},
		{"public key not base64", signed(sig), "%%%", false},
		{"tampered", json.RawMessage(`{"key":"abd","signatures":{"@a:x":{"ed25519:DEV":"` + sig + `"}}}`), pubB64, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := verifySignature(c.obj, "@a:x", "DEV", c.pub)
			if (err == nil) != c.ok {
				t.Fatalf("verifySignature = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func TestWithoutSignatures(t *testing.T) {
	// withoutSignatures must ignore signatures and unsigned but nothing else.
	a, _ := withoutSignatures([]byte(`{"b":1,"a":2,"signatures":{},"unsigned":{}}`))
	b, _ := withoutSignatures([]byte(`{"a":2,"b":1}`))
	if string(a) != string(b) || string(a) != `{"a":2,"b":1}` {
		t.Fatalf("withoutSignatures: %s vs %s", a, b)
	}
}
