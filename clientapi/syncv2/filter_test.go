package syncv2

import (
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/storage"
)

func TestTypeMatches(t *testing.T) {
	cases := []struct {
		pattern, typ string
		want         bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.member", false},
		{"m.room.*", "m.room.member", true},
		{"m.*", "org.example", false},
		{"*", "anything", true},
		{"m.*.message", "m.room.message", true},
		{"m.*.message", "m.room.member", false},
		{"*.member", "m.room.member", true},
	}
	for _, c := range cases {
		if got := typeMatches(c.pattern, c.typ); got != c.want {
			t.Errorf("typeMatches(%q, %q) = %v", c.pattern, c.typ, got)
		}
	}
}

func TestFilterParts(t *testing.T) {
	f, err := ParseFilter(`{"room":{"rooms":["!a:x"],"not_rooms":["!b:x"],"timeline":{"limit":3,"types":["m.room.*"],"not_senders":["@bad:x"],"contains_url":true},
		"state":{"lazy_load_members":true}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if f.TimelineLimit() != 3 || !f.LazyLoadMembers() || f.IncludeRedundantMembers() {
		t.Fatalf("limit/lazy parsed wrong: %d %v", f.TimelineLimit(), f.LazyLoadMembers())
	}
	if !f.RoomAllowed("!a:x") || f.RoomAllowed("!b:x") || f.RoomAllowed("!c:x") {
		t.Fatal("rooms/not_rooms not applied")
	}
	tl := f.Room.Timeline
	ev := func(typ, sender, js string) *storage.Event {
		return &storage.Event{Type: typ, Sender: sender, RoomID: "!a:x", JSON: []byte(js)}
	}
	if !allowsEvent(tl, ev("m.room.message", "@a:x", `{"content":{"url":"mxc://x/y"}}`)) {
		t.Error("matching event dropped")
	}
	if allowsEvent(tl, ev("m.room.message", "@a:x", `{"content":{"body":"no url"}}`)) {
		t.Error("contains_url not applied")
	}
	if allowsEvent(tl, ev("m.room.message", "@bad:x", `{"content":{"url":"mxc://x/y"}}`)) {
		t.Error("not_senders not applied")
	}
	if allowsEvent(tl, ev("org.custom", "@a:x", `{"content":{"url":"mxc://x/y"}}`)) {
		t.Error("types not applied")
	}
	if _, err := ParseFilter(`{"room": 5}`); err == nil {
		t.Error("malformed filter accepted")
	}
}

// TestAllowsWithoutContent: items with no content (typing, receipts,
// presence) have no url: contains_url true drops them, false keeps them.
func TestAllowsWithoutContent(t *testing.T) {
	for _, want := range []bool{true, false} {
		p := &mautrix.FilterPart{ContainsURL: &want}
		if got := allows(p, "m.typing", "", "!a:x", nil); got == want {
			t.Errorf("contains_url %v on an item without content: allows = %v", want, got)
		}
	}
}
