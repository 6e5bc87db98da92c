package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// TestParseEDUBounds: an EDU's content is bounded (413 as the PDU bounds),
// a malformed EDU is 400.
func TestParseEDUBounds(t *testing.T) {
	body := func(edus string) []byte { return []byte(`{"origin":"a","pdus":[],"edus":[` + edus + `]}`) }
	fits := `{"edu_type":"m.x","content":{"k":"` + strings.Repeat("a", MaxEDUBytes-8) + `"}}`
	over := `{"edu_type":"m.x","content":{"k":"` + strings.Repeat("a", MaxEDUBytes-7) + `"}}`
	for _, c := range []struct{ name, edus, code string }{
		{"typed", `{"edu_type":"m.typing","content":{"room_id":"!r:a"}}`, ""},
		{"64 KiB content", fits, ""},
		{"content over 64 KiB", over, "M_TOO_LARGE"},
		{"not an object", `5`, "M_BAD_JSON"},
		{"edu_type not a string", `{"edu_type":5,"content":{}}`, "M_BAD_JSON"},
		{"no edu_type", `{"content":{}}`, ""},
	} {
		txn, err := ParseTransaction(body(c.edus))
		var me *mxhttp.Error
		switch {
		case c.code == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.code != "" && (!errors.As(err, &me) || me.Code != c.code):
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		case c.name == "typed" && (len(txn.EDUs) != 1 || txn.EDUs[0].Type != "m.typing" || string(txn.EDUs[0].Content) != `{"room_id":"!r:a"}`):
			t.Errorf("parsed %+v", txn.EDUs)
		}
	}
}

// TestEDUDispatch: EDUs go to their type's handler, in order, after the
// transaction's PDUs, with the origin; an unknown type is ignored; a
// handler's error or panic neither fails the transaction nor stops the
// EDUs after it; a repeated transaction does not deliver them again.
func TestEDUDispatch(t *testing.T) {
	store := newFakeStore()
	rooms := &fakeRooms{store: store, reject: map[id.EventID]bool{}}
	ev, evID := mk(t, "hello", 2, "$head")
	var mu sync.Mutex
	var got []string
	record := func(_ context.Context, origin string, content json.RawMessage) error {
		mu.Lock()
		defer mu.Unlock()
		if store.events[string(evID)] == nil {
			t.Errorf("EDU dispatched before the transaction's PDU was stored")
		}
		got = append(got, origin+" "+string(content))
		return nil
	}
	e, err := New(Options{Rooms: rooms, Store: store, Keys: keys{"remote.test": remoteKey}, EDUs: map[string]EDUHandler{
		"m.a":     record,
		"m.fail":  func(context.Context, string, json.RawMessage) error { return errors.New("refused") },
		"m.panic": func(context.Context, string, json.RawMessage) error { panic("boom") },
	}})
	if err != nil {
		t.Fatal(err)
	}
	edus := []map[string]any{
		{"edu_type": "m.a", "content": map[string]int{"n": 1}},
		{"edu_type": "m.fail", "content": map[string]int{}},
		{"edu_type": "m.panic", "content": map[string]int{}},
		{"edu_type": "m.unknown", "content": map[string]int{}},
		{"edu_type": "m.a", "content": map[string]int{"n": 2}},
	}
	body, _ := json.Marshal(map[string]any{"origin": "remote.test", "pdus": []json.RawMessage{ev}, "edus": edus})
	for i := 0; i < 2; i++ { // the second is a retry of the same transaction
		res, err := e.Transaction(context.Background(), "remote.test", "t1", body)
		if err != nil || res[string(evID)] != "" {
			t.Fatalf("attempt %d: %v %v", i, res, err)
		}
	}
	if want := []string{`remote.test {"n":1}`, `remote.test {"n":2}`}; !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q (once each, in order)", got, want)
	}
	for _, c := range []struct {
		typ, result string
		want        float64
	}{{"m.a", "ok", 2}, {"m.fail", "error", 1}, {"m.panic", "panic", 1}, {"other", "ignored", 1}} {
		if n := testutil.ToFloat64(e.m.edus.WithLabelValues(c.typ, c.result)); n != c.want {
			t.Errorf("edus{%s,%s} = %v, want %v", c.typ, c.result, n, c.want)
		}
	}
}
