package clientevent

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// benchPDU is a typical room v11 message as stored (hashes, signatures, DAG
// references and all), so that Render skips what a client never sees.
const benchPDU = `{"auth_events":["$aGVsbG8gd29ybGQgdGhpcyBpcyBhIHRlc3QgZXZlbnQ","$c2Vjb25kIGF1dGggZXZlbnQgZm9yIHRoZSBiZW5jaG1h","$dGhpcmQgYXV0aCBldmVudCBmb3IgdGhlIGJlbmNobWFy"],"content":{"body":"Hello, this is a fairly ordinary chat message with a few words in it.","msgtype":"m.text","m.mentions":{"user_ids":["@bob:example.org"]}},"depth":1234,"hashes":{"sha256":"eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg"},"origin_server_ts":1765000000000,"prev_events":["$cHJldiBldmVudCBpZCBmb3IgdGhlIGJlbmNobWFyayB0"],"room_id":"!roomidforthebenchmark:example.org","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:a_abcd":"eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eQ"}},"type":"m.room.message","unsigned":{}}`

type mapStore map[string]*storage.Event

func (m mapStore) GetEvents(_ context.Context, ids []string) (map[string]*storage.Event, error) {
	out := map[string]*storage.Event{}
	for _, id := range ids {
		if e, ok := m[id]; ok {
			out[id] = e
		}
	}
	return out, nil
}

func (mapStore) ErasedUsers(context.Context, []string) (map[string]bool, error) { return nil, nil }

func (mapStore) GetRoom(_ context.Context, roomID string) (*storage.RoomRow, error) {
	return &storage.RoomRow{RoomID: roomID, RoomVersion: "11"}, nil
}

func strp(s string) *string { return &s }

func viewer() *Viewer {
	return &Viewer{UserID: "@alice:example.org", DeviceID: "DEV",
		MembershipAt: func(int64) string { return "join" }, CanSee: func(int64) (bool, error) { return true, nil }}
}

func TestRender(t *testing.T) {
	redaction := &storage.Event{EventID: "$red", RoomID: "!r:x", Type: "m.room.redaction", Sender: "@bob:x", OriginServerTS: 5, StreamPos: 4,
		JSON: []byte(`{"type":"m.room.redaction","content":{"redacts":"$msg","reason":"spam"},"sender":"@bob:x"}`)}
	oldTopic := &storage.Event{EventID: "$t1", Type: "m.room.topic", StateKey: strp(""), Sender: "@carol:x", StreamPos: 1, JSON: []byte(`{"content":{"topic":"old"}}`)}
	store := mapStore{"$red": redaction, "$t1": oldTopic}
	evs := []*storage.Event{
		{EventID: "$msg", RoomID: "!r:x", Type: "m.room.message", Sender: "@alice:example.org", OriginServerTS: 1, StreamPos: 2,
			JSON: []byte(`{"type":"m.room.message","content":{},"sender":"@alice:example.org"}`), RedactedBy: "$red", TxnDevice: "DEV", TxnID: "t1"},
		{EventID: "$t2", RoomID: "!r:x", Type: "m.room.topic", StateKey: strp(""), Sender: "@bob:x", OriginServerTS: 2, StreamPos: 3,
			JSON: []byte(`{"content":{"topic":"new"}}`), ReplacesState: "$t1", TxnDevice: "OTHER", TxnID: "t2"},
		redaction,
	}
	out, err := Render(context.Background(), store, viewer(), evs)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, o := range out {
		var m map[string]any
		if err := json.Unmarshal(o, &m); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		got = append(got, m)
	}
	u := func(i int) map[string]any { return got[i]["unsigned"].(map[string]any) }
	if u(0)["transaction_id"] != "t1" || u(0)["membership"] != "join" {
		t.Errorf("own event: %s", out[0])
	}
	if rb, _ := u(0)["redacted_because"].(map[string]any); rb == nil || rb["redacts"] != "$msg" || rb["event_id"] != "$red" {
		t.Errorf("redacted_because: %s", out[0])
	}
	if pc, _ := u(1)["prev_content"].(map[string]any); pc == nil || pc["topic"] != "old" || u(1)["replaces_state"] != "$t1" {
		t.Errorf("prev_content: %s", out[1])
	}
	if u(1)["prev_sender"] != "@carol:x" {
		t.Errorf("prev_sender: %s", out[1])
	}
	if _, ok := u(1)["transaction_id"]; ok {
		t.Errorf("another device's transaction ID shown: %s", out[1])
	}
	if got[2]["redacts"] != "$msg" {
		t.Errorf("v11 redaction without top-level redacts: %s", out[2])
	}
	// A viewer who may not see the replaced event gets no prev_content.
	v := viewer()
	v.CanSee = func(int64) (bool, error) { return false, nil }
	hidden, err := One(context.Background(), store, v, evs[1])
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Unsigned map[string]any }
	if json.Unmarshal(hidden, &m) != nil || (m.Unsigned["prev_content"] != nil || m.Unsigned["prev_sender"] != nil) {
		t.Errorf("prev_content of a hidden event: %s", hidden)
	}
	with, err := WithUnsigned(hidden, "m.relations", map[string]int{"n": 1})
	if err != nil || json.Unmarshal(with, &m) != nil || m.Unsigned["m.relations"] == nil {
		t.Errorf("WithUnsigned: %s %v", with, err)
	}
}

// BenchmarkRender is the cost of rendering one timeline message for /sync
// (no related events to load).
func BenchmarkRender(b *testing.B) {
	e := &storage.Event{StreamPos: 10, EventID: "$ZXZlbnQgaWQgb2YgdGhlIGJlbmNobWFyayBldmVudCBoZXJl", RoomID: "!roomidforthebenchmark:example.org",
		Type: "m.room.message", Sender: "@alice:example.org", OriginServerTS: 1765000000000, JSON: []byte(benchPDU), TxnDevice: "DEV", TxnID: "t1"}
	evs := []*storage.Event{e}
	v, ctx := viewer(), context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(ctx, mapStore{}, v, evs); err != nil {
			b.Fatal(err)
		}
	}
}
