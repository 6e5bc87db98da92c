package clientevent

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// erasedStore is a mapStore in which @alice:x erased her account.
type erasedStore struct{ mapStore }

func (erasedStore) ErasedUsers(_ context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, id := range ids {
		if id == "@alice:x" {
			out[id] = true
		}
	}
	return out, nil
}

func TestRenderErased(t *testing.T) {
	oldMember := &storage.Event{EventID: "$m1", RoomID: "!r:x", Type: "m.room.member", StateKey: strp("@alice:x"), Sender: "@alice:x", StreamPos: 1,
		JSON: []byte(`{"content":{"membership":"join","displayname":"Alice Secret"}}`)}
	evs := []*storage.Event{
		{EventID: "$msg", RoomID: "!r:x", Type: "m.room.message", Sender: "@alice:x", StreamPos: 2,
			JSON: []byte(`{"content":{"body":"private words","msgtype":"m.text"}}`)},
		{EventID: "$leave", RoomID: "!r:x", Type: "m.room.member", StateKey: strp("@alice:x"), Sender: "@alice:x", StreamPos: 5,
			JSON: []byte(`{"content":{"membership":"leave"}}`), ReplacesState: "$m1"},
		{EventID: "$enc", RoomID: "!r:x", Type: "m.room.encryption", StateKey: strp(""), Sender: "@alice:x", StreamPos: 4,
			JSON: []byte(`{"content":{"algorithm":"m.megolm.v1.aes-sha2"}}`)},
		{EventID: "$bob", RoomID: "!r:x", Type: "m.room.message", Sender: "@bob:x", StreamPos: 3,
			JSON: []byte(`{"content":{"body":"bob speaks","msgtype":"m.text"}}`)},
	}
	store := erasedStore{mapStore{"$m1": oldMember}}
	render := func(joinedFrom int64) string {
		v := &Viewer{UserID: "@carol:x", CanSee: func(int64) (bool, error) { return true, nil },
			MembershipAt: func(pos int64) string {
				if pos >= joinedFrom {
					return "join"
				}
				return "leave"
			}}
		out, err := Render(context.Background(), store, v, evs)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(out)
		return string(b)
	}
	// Joined before everything: the erased user's events as sent.
	if got := render(0); !strings.Contains(got, "private words") || !strings.Contains(got, "Alice Secret") {
		t.Errorf("a member at the time sees the content: %s", got)
	}
	// Joined after: content and the old display name gone, others' events intact.
	got := render(10)
	if strings.Contains(got, "private words") || strings.Contains(got, "Alice Secret") {
		t.Errorf("a later member sees erased content: %s", got)
	}
	if !strings.Contains(got, "m.megolm.v1.aes-sha2") {
		t.Errorf("room state an erased user set must stay whole: %s", got)
	}
	if !strings.Contains(got, "bob speaks") || !strings.Contains(got, `"membership":"leave"`) || !strings.Contains(got, `"content":{}`) {
		t.Errorf("rendering after erasure: %s", got)
	}
	hidden, err := HidesErased(context.Background(), store, &Viewer{UserID: "@carol:x", MembershipAt: func(int64) string { return "leave" }}, evs[0])
	if err != nil || !hidden {
		t.Errorf("HidesErased = %v, %v", hidden, err)
	}
	if hidden, _ := HidesErased(context.Background(), store, &Viewer{UserID: "@carol:x"}, evs[2]); hidden {
		t.Error("HidesErased on another sender's event")
	}
}
