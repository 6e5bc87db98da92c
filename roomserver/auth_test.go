package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// These tests drive every membership transition and power-level rule
// through the real input path (Send/ChangeMembership/Join/Knock/Redact),
// checking both the allowed and the refused case.

// errCode names err's kind by the errcode clients get for it.
func errCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		switch e.Kind {
		case ErrForbidden:
			return "M_FORBIDDEN"
		case ErrNotFound:
			return "M_NOT_FOUND"
		case ErrInvalidParam:
			return "M_INVALID_PARAM"
		case ErrBadJSON:
			return "M_BAD_JSON"
		}
		return "kind: " + e.Kind.Error()
	}
	if err == nil {
		return ""
	}
	return "other: " + err.Error()
}

type authEnv struct {
	t    *testing.T
	s    *Server
	ctx  context.Context
	room id.RoomID
}

func newAuthEnv(t *testing.T, req *CreateRoomRequest) *authEnv {
	s := newTestServer(t)
	ctx := context.Background()
	roomID, err := s.CreateRoom(ctx, user("owner"), req)
	if err != nil {
		t.Fatal(err)
	}
	return &authEnv{t, s, ctx, roomID}
}

func (e *authEnv) do(action string, sender, target string) error {
	return e.s.ChangeMembership(e.ctx, MembershipAction{Sender: user(sender), RoomID: e.room, Target: user(target), Action: action})
}

func (e *authEnv) join(u string) error {
	_, err := e.s.Join(e.ctx, user(u), string(e.room), "")
	return err
}

func (e *authEnv) setPL(mutate func(pl map[string]any)) {
	e.t.Helper()
	ev, err := readState(e.ctx, e.s, e.room, "m.room.power_levels", "")
	if err != nil {
		e.t.Fatal(err)
	}
	var pl map[string]any
	_ = json.Unmarshal([]byte(gjson.GetBytes(ev, "content").Raw), &pl)
	mutate(pl)
	if _, err := e.s.Send(e.ctx, SendRequest{Sender: user("owner"), RoomID: e.room, Type: "m.room.power_levels", StateKey: stateKeyPtr(""), Content: MustJSON(pl)}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *authEnv) membership(u string) string {
	m, err := e.s.db.GetMembership(e.ctx, string(e.room), string(user(u)))
	if err != nil {
		return "none"
	}
	return m.Membership
}

func expect(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := errCode(err); got != code {
		t.Fatalf("%s: got %q, want %q", what, got, code)
	}
}

func TestAuthMembershipTransitions(t *testing.T) {
	e := newAuthEnv(t, &CreateRoomRequest{Preset: "private_chat"})
	// Joining an invite-only room without an invite is refused.
	expect(t, "uninvited join", e.join("bob"), "M_FORBIDDEN")
	// Invite needs the sender in the room.
	expect(t, "invite by outsider", e.do("invite", "carol", "bob"), "M_FORBIDDEN")
	expect(t, "invite", e.do("invite", "owner", "bob"), "")
	expect(t, "invited join", e.join("bob"), "")
	expect(t, "invite joined user", e.do("invite", "owner", "bob"), "M_FORBIDDEN")
	// Invite power: raise the invite level above bob's.
	e.setPL(func(pl map[string]any) { pl["invite"] = 50 })
	expect(t, "invite without power", e.do("invite", "bob", "carol"), "M_FORBIDDEN")
	e.setPL(func(pl map[string]any) { pl["invite"] = 0 })
	expect(t, "invite with power", e.do("invite", "bob", "carol"), "")
	// An invitee can reject (leave).
	expect(t, "reject invite", e.do("leave", "carol", ""), "")
	if m := e.membership("carol"); m != "leave" {
		t.Fatalf("carol after rejecting: %s", m)
	}
	// Kick needs the kick level and a higher level than the target.
	expect(t, "kick without power", e.do("kick", "bob", "owner"), "M_FORBIDDEN")
	expect(t, "kick", e.do("kick", "owner", "bob"), "")
	expect(t, "kick non-member", e.do("kick", "owner", "bob"), "M_FORBIDDEN")
	// Ban, then the banned user cannot join even with an invite.
	expect(t, "invite again", e.do("invite", "owner", "bob"), "")
	expect(t, "ban", e.do("ban", "owner", "bob"), "")
	expect(t, "banned join", e.join("bob"), "M_FORBIDDEN")
	expect(t, "invite banned", e.do("invite", "owner", "bob"), "M_FORBIDDEN")
	// Unban needs the ban level.
	expect(t, "invite dave", e.do("invite", "owner", "dave"), "")
	expect(t, "dave joins", e.join("dave"), "")
	expect(t, "unban without power", e.do("unban", "dave", "bob"), "M_FORBIDDEN")
	expect(t, "ban without power", e.do("ban", "dave", "carol"), "M_FORBIDDEN")
	expect(t, "unban", e.do("unban", "owner", "bob"), "")
	if m := e.membership("bob"); m != "leave" {
		t.Fatalf("bob after unban: %s", m)
	}
	expect(t, "unban not banned", e.do("unban", "owner", "bob"), "M_FORBIDDEN")
	// Leaving and sending after leaving.
	expect(t, "leave", e.do("leave", "dave", ""), "")
	_, err := e.s.Send(e.ctx, SendRequest{Sender: user("dave"), RoomID: e.room, Type: "m.room.message", Content: []byte(`{"body":"x"}`)})
	expect(t, "send after leave", err, "M_FORBIDDEN")
}

func TestAuthJoinRules(t *testing.T) {
	t.Run("public", func(t *testing.T) {
		e := newAuthEnv(t, &CreateRoomRequest{Preset: "public_chat"})
		expect(t, "join public", e.join("bob"), "")
	})
	t.Run("invite", func(t *testing.T) {
		e := newAuthEnv(t, &CreateRoomRequest{Preset: "private_chat"})
		expect(t, "join invite-only", e.join("bob"), "M_FORBIDDEN")
	})
	for _, rule := range []string{"knock", "knock_restricted"} {
		t.Run(rule, func(t *testing.T) {
			e := newAuthEnv(t, &CreateRoomRequest{RoomVersion: "10", InitialState: []InitialStateEvent{
				{Type: "m.room.join_rules", Content: MustJSON(map[string]any{"join_rule": rule, "allow": []any{}})},
			}})
			expect(t, "join knock room", e.join("bob"), "M_FORBIDDEN")
			_, err := e.s.Knock(e.ctx, user("bob"), string(e.room), "let me in")
			expect(t, "knock", err, "")
			if m := e.membership("bob"); m != "knock" {
				t.Fatalf("bob after knock: %s", m)
			}
			_, err = e.s.Knock(e.ctx, user("bob"), string(e.room), "again")
			expect(t, "knock twice", err, "")
			expect(t, "accept knock", e.do("invite", "owner", "bob"), "")
			expect(t, "join after accepted knock", e.join("bob"), "")
			_, err = e.s.Knock(e.ctx, user("bob"), string(e.room), "")
			expect(t, "knock while joined", err, "M_FORBIDDEN")
		})
	}
	t.Run("knock on public room", func(t *testing.T) {
		e := newAuthEnv(t, &CreateRoomRequest{Preset: "public_chat"})
		_, err := e.s.Knock(e.ctx, user("bob"), string(e.room), "")
		expect(t, "knock public", err, "M_FORBIDDEN")
	})
	t.Run("knock in v6", func(t *testing.T) {
		e := newAuthEnv(t, &CreateRoomRequest{RoomVersion: "6", InitialState: []InitialStateEvent{
			{Type: "m.room.join_rules", Content: MustJSON(map[string]any{"join_rule": "knock"})},
		}})
		_, err := e.s.Knock(e.ctx, user("bob"), string(e.room), "")
		expect(t, "knock unsupported version", err, "M_FORBIDDEN")
	})
	for _, rule := range []string{"restricted", "knock_restricted"} {
		for _, version := range []string{"10", "12"} {
			t.Run(rule+"/v"+version, func(t *testing.T) {
				s := newTestServer(t)
				ctx := context.Background()
				space, err := s.CreateRoom(ctx, user("owner"), &CreateRoomRequest{Preset: "public_chat", RoomVersion: version})
				if err != nil {
					t.Fatal(err)
				}
				roomID, err := s.CreateRoom(ctx, user("owner"), &CreateRoomRequest{RoomVersion: version, InitialState: []InitialStateEvent{
					{Type: "m.room.join_rules", Content: MustJSON(map[string]any{"join_rule": rule,
						"allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}}})},
				}})
				if err != nil {
					t.Fatal(err)
				}
				e := &authEnv{t, s, ctx, roomID}
				expect(t, "restricted join, not in allowed room", e.join("bob"), "M_FORBIDDEN")
				if _, err := s.Join(ctx, user("bob"), string(space), ""); err != nil {
					t.Fatal(err)
				}
				expect(t, "restricted join via allowed room", e.join("bob"), "")
				ev, err := readState(ctx, s, roomID, "m.room.member", string(user("bob")))
				if err != nil {
					t.Fatal(err)
				}
				var c map[string]any
				_ = json.Unmarshal([]byte(gjson.GetBytes(ev, "content").Raw), &c)
				if c["join_authorised_via_users_server"] != string(user("owner")) {
					t.Fatalf("join not authorised via owner: %v", c)
				}
			})
		}
	}
}

func TestAuthPowerLevels(t *testing.T) {
	e := newAuthEnv(t, &CreateRoomRequest{Preset: "public_chat"})
	expect(t, "bob joins", e.join("bob"), "")
	send := func(u, typ string, stateKey *string, content string) error {
		_, err := e.s.Send(e.ctx, SendRequest{Sender: user(u), RoomID: e.room, Type: typ, StateKey: stateKey, Content: []byte(content)})
		return err
	}
	// state_default 50: bob (0) cannot set the topic; messages are fine.
	expect(t, "topic without power", send("bob", "m.room.topic", stateKeyPtr(""), `{"topic":"x"}`), "M_FORBIDDEN")
	expect(t, "message", send("bob", "m.room.message", nil, `{"body":"hi"}`), "")
	// events_default raised: bob cannot talk.
	e.setPL(func(pl map[string]any) { pl["events_default"] = 10 })
	expect(t, "muted message", send("bob", "m.room.message", nil, `{"body":"hi"}`), "M_FORBIDDEN")
	e.setPL(func(pl map[string]any) { pl["events_default"] = 0 })
	// Per-event level.
	e.setPL(func(pl map[string]any) { pl["events"].(map[string]any)["m.reaction"] = 20 })
	expect(t, "event level", send("bob", "m.reaction", nil, `{}`), "M_FORBIDDEN")
	// Nobody can grant more than their own level or change someone at their level.
	e.setPL(func(pl map[string]any) { pl["users"].(map[string]any)[string(user("bob"))] = 50 })
	pl := map[string]any{"users": map[string]any{string(user("owner")): 100, string(user("bob")): 100}}
	expect(t, "grant above own level", send("bob", "m.room.power_levels", stateKeyPtr(""), string(MustJSON(pl))), "M_FORBIDDEN")
	// Private state keys: @-prefixed keys belong to their user.
	expect(t, "other user's state key", send("bob", "m.custom", stateKeyPtr(string(user("owner"))), `{}`), "M_FORBIDDEN")
	expect(t, "own state key", send("bob", "m.custom", stateKeyPtr(string(user("bob"))), `{}`), "")
}

func TestAuthRedactionPower(t *testing.T) {
	for _, version := range []string{"1", "6", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			e := newAuthEnv(t, &CreateRoomRequest{Preset: "public_chat", RoomVersion: version})
			expect(t, "bob joins", e.join("bob"), "")
			expect(t, "carol joins", e.join("carol"), "")
			msg := func(u string) id.EventID {
				evID, err := e.s.Send(e.ctx, SendRequest{Sender: user(u), RoomID: e.room, Type: "m.room.message", Content: []byte(`{"body":"secret"}`)})
				if err != nil {
					t.Fatal(err)
				}
				return evID
			}
			ownerMsg, bobMsg, carolMsg := msg("owner"), msg("bob"), msg("carol")
			_, err := e.s.Redact(e.ctx, user("bob"), "D", e.room, ownerMsg, "", "")
			expect(t, "redact other's without power", err, "M_FORBIDDEN")
			_, err = e.s.Redact(e.ctx, user("bob"), "D", e.room, bobMsg, "", "")
			expect(t, "redact own", err, "")
			_, err = e.s.Redact(e.ctx, user("owner"), "D", e.room, carolMsg, "mod", "")
			expect(t, "redact other's with power", err, "")
			for _, evID := range []id.EventID{bobMsg, carolMsg} {
				ev, err := readEvent(e.ctx, e.s, e.room, evID)
				if err != nil {
					t.Fatal(err)
				}
				if gjson.GetBytes(ev, "content").Raw != "{}" || !gjson.GetBytes(ev, "unsigned.redacted_because").Exists() {
					t.Fatalf("redacted event %s: %s", evID, ev)
				}
			}
			ev, err := readEvent(e.ctx, e.s, e.room, ownerMsg)
			if err != nil || gjson.GetBytes(ev, "content").Raw == "{}" {
				t.Fatalf("unredacted event lost content: %s %v", ev, err)
			}
		})
	}
}

// TestRedactionKeepsProtectedKeys: redaction follows each version's algorithm.
func TestRedactionKeepsProtectedKeys(t *testing.T) {
	for v := 1; v <= 12; v++ {
		version := fmt.Sprint(v)
		t.Run("v"+version, func(t *testing.T) {
			e := newAuthEnv(t, &CreateRoomRequest{Preset: "public_chat", RoomVersion: version})
			evID, err := e.s.Send(e.ctx, SendRequest{Sender: user("owner"), RoomID: e.room, Type: "m.room.join_rules", StateKey: stateKeyPtr(""),
				Content: []byte(`{"join_rule":"public","allow":[],"extra":"gone"}`)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.s.Redact(e.ctx, user("owner"), "D", e.room, evID, "", ""); err != nil {
				t.Fatal(err)
			}
			ev, err := readEvent(e.ctx, e.s, e.room, evID)
			if err != nil {
				t.Fatal(err)
			}
			var c map[string]any
			_ = json.Unmarshal([]byte(gjson.GetBytes(ev, "content").Raw), &c)
			_, hasAllow := c["allow"]
			if c["join_rule"] != "public" || c["extra"] != nil || hasAllow != id.RoomVersion(version).RestrictedJoins() {
				t.Fatalf("redacted join rules: %v", c)
			}
		})
	}
}
