package mxhttp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/crypto/canonicaljson"
)

func errcode(err error) string {
	var mErr *Error
	if errors.As(err, &mErr) {
		return mErr.Code
	}
	if err != nil {
		return "not a Matrix error: " + err.Error()
	}
	return ""
}

func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth-1) + "[]" + strings.Repeat("}", depth-1)
}

// The JSON edge: what every client body goes through ("" = accepted).
var edgeCases = []struct {
	name, body     string
	edge, eventErr string // errcode from CheckJSON and from CheckEventJSON
}{
	{"empty", ``, "", ""},
	{"plain", `{"body":"hi","n":1}`, "", ""},
	{"surrogate pair", `{"a":"\ud83d\ude00"}`, "", ""},
	{"literal emoji", `{"a":"😀"}`, "", ""},
	{"max int", `{"a":9007199254740991}`, "", ""},
	{"min int", `{"a":-9007199254740991}`, "", ""},
	{"zero", `{"a":[0,-1,10]}`, "", ""},
	{"escaped backslash then u0000", `{"a":"\\u0000"}`, "", ""},
	{"depth 100", nested(MaxJSONDepth), "", ""},
	{"duplicate keys", `{"a":1,"a":2}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"nested duplicate keys", `{"x":{"a":1,"a":2}}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"duplicate keys, one escaped", `{"a":1,"\u0061":2}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"float", `{"a":1.5}`, "", "M_BAD_JSON"},
	{"float with zero fraction", `{"a":1.0}`, "", "M_BAD_JSON"},
	{"exponent", `{"a":1e2}`, "", "M_BAD_JSON"},
	{"negative zero", `{"a":-0}`, "", "M_BAD_JSON"},
	{"2^53", `{"a":9007199254740992}`, "", "M_BAD_JSON"},
	{"-(2^53)", `{"a":-9007199254740992}`, "", "M_BAD_JSON"},
	{"2^53+1", `{"a":9007199254740993}`, "", "M_BAD_JSON"},
	{"huge int", `{"a":123456789012345678901234567890}`, "", "M_BAD_JSON"},
	{"1e400", `{"a":1e400}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"-1e400", `{"a":[-1e400]}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"invalid UTF-8 in string", "{\"a\":\"\xff\"}", "M_NOT_JSON", "M_NOT_JSON"},
	{"UTF-8 encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}", "M_NOT_JSON", "M_NOT_JSON"},
	{"invalid UTF-8 in key", "{\"\xc3\":1}", "M_NOT_JSON", "M_NOT_JSON"},
	{"lone high surrogate", `{"a":"\ud800"}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"high surrogate then text", `{"a":"\ud800x"}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"two high surrogates", `{"a":"\ud800\ud800"}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"lone low surrogate", `{"a":"\udc00"}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"reversed pair", `{"a":"\ude00\ud83d"}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"lone surrogate in key", `{"\udfff":1}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"NUL", `{"a":"x\u0000"}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"NUL in key", `{"\u0000":1}`, "M_BAD_JSON", "M_BAD_JSON"},
	{"depth 101", nested(MaxJSONDepth + 1), "M_BAD_JSON", "M_BAD_JSON"},
	{"deep arrays", strings.Repeat("[", 5000) + strings.Repeat("]", 5000), "M_BAD_JSON", "M_BAD_JSON"},
	{"not JSON", `{"a":`, "M_NOT_JSON", "M_NOT_JSON"},
	{"two values", `{} {}`, "M_NOT_JSON", "M_NOT_JSON"},
}

func TestCheckJSON(t *testing.T) {
	for _, c := range edgeCases {
		if got := errcode(CheckJSON([]byte(c.body))); got != c.edge {
			t.Errorf("%s: CheckJSON(%.60q) = %q, want %q", c.name, c.body, got, c.edge)
		}
		if got := errcode(CheckEventJSON([]byte(c.body))); got != c.eventErr {
			t.Errorf("%s: CheckEventJSON(%.60q) = %q, want %q", c.name, c.body, got, c.eventErr)
		}
	}
}

// DecodeJSON (and so ReadJSON and ReadJSONObject) applies the edge checks even
// where the target type would have hidden the fault (a Go string decodes an
// unpaired surrogate to U+FFFD; json.RawMessage keeps anything).
func TestDecodeJSONAppliesEdgeChecks(t *testing.T) {
	for _, c := range edgeCases {
		body := c.body
		if body == "" {
			continue
		}
		var raw map[string]json.RawMessage
		err := DecodeJSON([]byte(body), &raw)
		want := c.edge
		if want == "" && !strings.HasPrefix(body, "{") {
			want = "M_BAD_JSON" // arrays are not objects
		}
		if got := errcode(err); got != want {
			t.Errorf("%s: DecodeJSON(%.60q) = %q, want %q", c.name, body, got, want)
		}
	}
}

// FuzzCheckJSON: whatever the input, the checks never panic, and what they
// accept is what strict parsers accept — valid UTF-8, no unpaired surrogate,
// bounded depth — and event content is canonical JSON that mautrix (the
// signer) canonicalizes without error, unchanged in meaning.
func FuzzCheckJSON(f *testing.F) {
	for _, c := range edgeCases {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		edgeErr, eventErr := CheckJSON(body), CheckEventJSON(body)
		for _, err := range []error{edgeErr, eventErr} {
			if err != nil && errcode(err) != "M_BAD_JSON" && errcode(err) != "M_NOT_JSON" {
				t.Fatalf("unexpected error %v", err)
			}
		}
		if eventErr == nil && edgeErr != nil {
			t.Fatalf("event check accepts what the edge refuses (%v): %q", edgeErr, body)
		}
		if edgeErr != nil || len(strings.TrimSpace(string(body))) == 0 {
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("accepted invalid UTF-8: %q", body)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("accepted JSON that encoding/json refuses (%v): %q", err, body)
		}
		if depth(v) > MaxJSONDepth {
			t.Fatalf("accepted depth %d: %q", depth(v), body)
		}
		// Re-encoding the decoded value must give the same strings: an unpaired
		// surrogate would have been replaced by U+FFFD on the way.
		if strings.Contains(string(mustMarshal(t, v)), "\ufffd") && !strings.Contains(string(body), "\ufffd") &&
			!strings.Contains(strings.ToLower(string(body)), `\ufffd`) {
			t.Fatalf("accepted a string that does not decode to Unicode text: %q", body)
		}
		if eventErr != nil {
			return
		}
		canon, err := canonicaljson.CanonicalJSON(body)
		if err != nil {
			t.Fatalf("accepted event JSON that mautrix cannot canonicalize (%v): %q", err, body)
		}
		if !utf8.Valid(canon) {
			t.Fatalf("canonical form is not UTF-8: %q", canon)
		}
		var back any
		if err := json.Unmarshal(canon, &back); err != nil {
			t.Fatalf("canonical form does not parse (%v): %q", err, canon)
		}
		if string(mustMarshal(t, back)) != string(mustMarshal(t, v)) {
			t.Fatalf("canonical form changed the value: %q -> %q", body, canon)
		}
	})
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func depth(v any) int {
	d := 0
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	case []any:
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	}
	return 0
}

// BenchmarkCheckJSON: the edge's cost on a message body and on a large
// to-device batch (100 recipients' encrypted payloads, ~64 KiB).
func BenchmarkCheckJSON(b *testing.B) {
	msg := []byte(`{"msgtype":"m.text","body":"` + strings.Repeat("hello world ", 80) + `","m.relates_to":{"rel_type":"m.thread","event_id":"$abc"}}`)
	var sb strings.Builder
	sb.WriteString(`{"messages":{`)
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`"@user` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `:example.org":{"DEVICE":{"algorithm":"m.olm.v1.curve25519-aes-sha2","sender_key":"abc","ciphertext":{"key":{"type":0,"body":"` + strings.Repeat("QUJD", 150) + `"}}}}`)
	}
	sb.WriteString(`}}`)
	batch := []byte(sb.String())
	for _, c := range []struct {
		name  string
		check func([]byte) error
		body  []byte
	}{
		{"CheckJSON/message", CheckJSON, msg},
		{"CheckEventJSON/message", CheckEventJSON, msg},
		{"CheckJSON/to-device batch", CheckJSON, batch},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.check(c.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
