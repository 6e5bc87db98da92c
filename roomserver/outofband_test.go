package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// TestSignMemberTemplate: a make_leave/make_knock template is signed only
// when it is our user's leave (knock) of the room, with bounded prev and
// auth events; anything else is the roomserver's error, never a panic.
func TestSignMemberTemplate(t *testing.T) {
	s := newTestServer(t)
	room := id.RoomID("!r:remote.test")
	alice := user("alice")
	tmpl := func(edit func(m map[string]any)) []byte {
		m := map[string]any{"type": "m.room.member", "room_id": room, "sender": alice, "state_key": alice,
			"content": map[string]any{"membership": "leave"}, "prev_events": []string{"$p"}, "auth_events": []string{"$a"},
			"depth": 3, "origin_server_ts": 1}
		if edit != nil {
			edit(m)
		}
		b, _ := json.Marshal(m)
		return b
	}
	raw, eventID, err := s.SignLeave(room, "10", tmpl(nil), alice, "bye")
	if err != nil || eventID == "" || !strings.Contains(string(raw), `"reason":"bye"`) || !strings.Contains(string(raw), `"test.local"`) {
		t.Fatalf("good leave: %v %s", err, raw)
	}
	prevs := make([]string, 21)
	for i := range prevs {
		prevs[i] = "$p"
	}
	for name, c := range map[string]struct {
		tmpl    []byte
		version id.RoomVersion
		user    id.UserID
		kind    error
	}{
		"not json":        {[]byte("{"), "10", alice, ErrBadJSON},
		"another user":    {tmpl(func(m map[string]any) { m["state_key"] = "@bob:test.local" }), "10", alice, ErrBadJSON},
		"another sender":  {tmpl(func(m map[string]any) { m["sender"] = "@bob:test.local" }), "10", alice, ErrBadJSON},
		"another room":    {tmpl(func(m map[string]any) { m["room_id"] = "!other:remote.test" }), "10", alice, ErrBadJSON},
		"a join":          {tmpl(func(m map[string]any) { m["content"] = map[string]any{"membership": "join"} }), "10", alice, ErrBadJSON},
		"not a member":    {tmpl(func(m map[string]any) { m["type"] = "m.room.message" }), "10", alice, ErrBadJSON},
		"no prev events":  {tmpl(func(m map[string]any) { m["prev_events"] = []string{} }), "10", alice, ErrBadJSON},
		"too many prevs":  {tmpl(func(m map[string]any) { m["prev_events"] = prevs }), "10", alice, ErrBadJSON},
		"remote user":     {tmpl(nil), "10", "@alice:remote.test", ErrForbidden},
		"unknown version": {tmpl(nil), "999", alice, ErrUnsupportedRoomVersion},
		"version 1":       {tmpl(nil), "1", alice, ErrUnsupportedRoomVersion},
		"huge":            {append(tmpl(nil)[:1], []byte(`"x":"`+strings.Repeat("x", MaxPDUBytes)+`",`+string(tmpl(nil)[1:]))...), "10", alice, ErrTooLarge},
	} {
		if _, _, err := s.SignLeave(room, c.version, c.tmpl, c.user, ""); !errors.Is(err, c.kind) {
			t.Errorf("%s: %v, want %v", name, err, c.kind)
		}
	}
	// A knock template must be a knock.
	if _, _, err := s.SignKnock(room, "10", tmpl(nil), alice, ""); !errors.Is(err, ErrBadJSON) {
		t.Errorf("a leave as a knock: %v", err)
	}
	if _, _, err := s.SignKnock(room, "10", tmpl(func(m map[string]any) { m["content"] = map[string]any{"membership": "knock"} }), alice, ""); err != nil {
		t.Errorf("a knock: %v", err)
	}
}

// TestRejectLocally: without an out-of-band invite there is nothing to
// reject (not found); with one, a leave on top of it is recorded and is the
// user's latest out-of-band membership.
func TestRejectLocally(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	room := id.RoomID("!r:remote.test")
	alice := user("alice")
	if err := s.RejectLocally(ctx, alice, room); !errors.Is(err, ErrNotFound) {
		t.Fatalf("nothing to reject: %v", err)
	}
	for _, version := range []id.RoomVersion{"1", "10"} {
		room := id.RoomID("!v" + string(version) + ":remote.test")
		sk := string(alice)
		inviteID := id.EventID("$invite" + string(version))
		ev := &Event{ID: inviteID, RoomID: room, Version: version}
		ev.PDU = mustInvitePDU(room, alice, sk)
		if err := s.storeOutOfBand(ctx, ev, version, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.RejectLocally(ctx, alice, room); err != nil {
			t.Fatalf("v%s: %v", version, err)
		}
		o, err := s.OutOfBand(ctx, alice, room)
		if err != nil || o.Membership != "leave" || o.Depth != 3 {
			t.Fatalf("v%s after rejecting: %+v %v", version, o, err)
		}
	}
}

func mustInvitePDU(room id.RoomID, target id.UserID, sk string) *pdu.PDU {
	return &pdu.PDU{RoomID: room, Sender: "@bob:remote.test", Type: "m.room.member", StateKey: &sk, Content: []byte(`{"membership":"invite"}`), Depth: 2}
}

func TestStrippedServers(t *testing.T) {
	raw := []byte(`{"unsigned":{"invite_room_state":[{"sender":"@a:one.test"},{"sender":"@b:two.test"},{"sender":"@c:one.test"},{"sender":5},{}],
		"knock_room_state":[{"sender":"@d:three.test"}]}}`)
	if got := strippedServers(raw); fmt.Sprint(got) != "[one.test two.test three.test]" {
		t.Fatalf("servers: %v", got)
	}
	if got := strippedServers([]byte(`{}`)); len(got) != 0 {
		t.Fatalf("none: %v", got)
	}
}
