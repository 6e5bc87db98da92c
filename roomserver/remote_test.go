package roomserver

import (
	"context"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

type fixedKeys map[string]*mfed.SigningKey

func (k fixedKeys) GetKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if key, ok := k[server]; ok && key.ID == keyID {
		return key.Pub, time.Now().Add(time.Hour), nil
	}
	return "", time.Time{}, fmt.Errorf("unknown key %s %s", server, keyID)
}

// remoteEvent builds an event as the server "remote.test" would, on top of
// the given prev events, with auth events from the local current state.
func remoteEvent(t *testing.T, s, remote *Server, roomID id.RoomID, p *proto, prevs ...id.EventID) []byte {
	t.Helper()
	ctx := context.Background()
	rs, err := s.loadRoom(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	var prev []ref
	depth := int64(0)
	for _, x := range prevs {
		se, err := s.db.GetEvent(ctx, string(x))
		if err != nil {
			t.Fatal(err)
		}
		e, _ := eventFromStored(rs.version, se)
		prev = append(prev, ref{e.ID, e.PDU.Hashes})
		depth = max(depth, se.Depth)
	}
	var auth []ref
	for _, k := range (&pdu.PDU{Type: p.Type, StateKey: p.StateKey, Sender: p.Sender, Content: jsonValue(p.Content)}).AuthEventSelection(rs.version) {
		if e := rs.state[k]; e != nil {
			auth = append(auth, ref{e.ID, e.PDU.Hashes})
		}
	}
	ev, err := remote.buildEvent(rs.version, roomID, p, prev, auth, depth+1, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	return ev.JSON
}

func TestRemoteInput(t *testing.T) {
	remoteKey := mfed.GenerateSigningKey()
	s := newTestServerWith(t, Options{Keys: fixedKeys{"remote.test": remoteKey}})
	ctx := context.Background()
	remote := &Server{key: remoteKey, serverName: "remote.test"}
	roomID, err := s.CreateRoom(ctx, user("owner"), &CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	row, _ := s.db.GetRoom(ctx, string(roomID))
	head := id.EventID(row.Extremities[0])
	ruser := id.UserID("@r:remote.test")

	// A remote join.
	join := remoteEvent(t, s, remote, roomID, &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(ruser)), Sender: ruser,
		Content: MustJSON(map[string]string{"membership": "join"})}, head)
	joinEv, err := s.Input(ctx, roomID, join, "remote.test")
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := s.db.GetMembership(ctx, string(roomID), string(ruser)); m == nil || m.Membership != "join" {
		t.Fatalf("remote user not joined: %+v", m)
	}
	// Sending it again is idempotent.
	if again, err := s.Input(ctx, roomID, join, "remote.test"); err != nil || again.ID != joinEv.ID {
		t.Fatalf("duplicate input: %v %v", again, err)
	}

	// A fork: two remote messages on the same parent, then a local message merges them.
	msg := func(body string) []byte {
		return remoteEvent(t, s, remote, roomID, &proto{Type: "m.room.message", Sender: ruser, Content: MustJSON(map[string]string{"body": body})}, joinEv.ID)
	}
	a, err := s.Input(ctx, roomID, msg("a"), "remote.test")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Input(ctx, roomID, msg("b"), "remote.test")
	if err != nil {
		t.Fatal(err)
	}
	row, _ = s.db.GetRoom(ctx, string(roomID))
	if len(row.Extremities) != 2 {
		t.Fatalf("extremities after fork = %v", row.Extremities)
	}
	merged, err := s.Send(ctx, SendRequest{Sender: user("owner"), RoomID: roomID, Type: "m.room.message", Content: []byte(`{"body":"merge"}`)})
	if err != nil {
		t.Fatal(err)
	}
	se, _ := s.db.GetEvent(ctx, string(merged))
	e, _ := eventFromStored("11", se)
	if len(e.PDU.PrevEvents) != 2 || !(e.PDU.PrevEvents[0] == a.ID || e.PDU.PrevEvents[1] == a.ID) || !(e.PDU.PrevEvents[0] == b.ID || e.PDU.PrevEvents[1] == b.ID) {
		t.Fatalf("merge prev_events = %v", e.PDU.PrevEvents)
	}

	// Soft fail: banned locally, the remote user (who has not seen the ban yet) sends on an old parent.
	lateRaw, origRaw := msg("after ban"), msg("original")
	if err := s.ChangeMembership(ctx, MembershipAction{Sender: user("owner"), RoomID: roomID, Target: ruser, Action: "ban"}); err != nil {
		t.Fatal(err)
	}
	late, err := s.Input(ctx, roomID, lateRaw, "remote.test")
	if err != nil {
		t.Fatal(err)
	}
	if !late.SoftFailed {
		t.Fatal("message from banned user was not soft-failed")
	}
	if _, err := readEvent(ctx, s, roomID, late.ID); err == nil {
		t.Fatal("soft-failed event is served")
	}

	// Tampered content: the content hash no longer matches, the event is stored redacted.
	var p pdu.PDU
	_ = jsonv2.Unmarshal(origRaw, &p)
	// Signature still valid (it covers the redacted form); content changed.
	p.Content = []byte(`{"body":"tampered"}`)
	raw, _ := jsonv2.Marshal(&p)
	ev, err := s.Input(ctx, roomID, raw, "remote.test")
	if err != nil {
		t.Fatal(err)
	}
	if string(ev.PDU.Content) != "{}" {
		t.Fatalf("tampered event kept content %s", ev.PDU.Content)
	}

	// A bad signature is rejected (a new event: the ID of the one above is already known).
	var q pdu.PDU
	_ = jsonv2.Unmarshal(msg("forged"), &q)
	q.Signatures = map[string]map[id.KeyID]string{"remote.test": {remoteKey.ID: "AAAA"}}
	raw, _ = jsonv2.Marshal(&q)
	if _, err := s.Input(ctx, roomID, raw, "remote.test"); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("bad signature: %v", err)
	}
}
