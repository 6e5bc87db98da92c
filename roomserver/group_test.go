package roomserver

import (
	"context"
	"slices"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// TestGroupWithLocalState: a local state event and remote events on the
// parent before it, processed in one batch: the remote events' state is
// resolved against the current state, which names the local event not yet
// stored (read from the batch), and all three commit.
func TestGroupWithLocalState(t *testing.T) {
	remoteKey := mfed.GenerateSigningKey()
	s := newTestServerWith(t, Options{Keys: fixedKeys{"remote.test": remoteKey}})
	ctx := context.Background()
	remote := &Server{key: remoteKey, serverName: "remote.test"}
	roomID, err := s.CreateRoom(ctx, user("owner"), &CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	row, _ := s.db.GetRoom(ctx, string(roomID))
	ruser := id.UserID("@r:remote.test")
	join := remoteEvent(t, s, remote, roomID, &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(ruser)), Sender: ruser,
		Content: MustJSON(map[string]string{"membership": "join"})}, id.EventID(row.Extremities[0]))
	joinEv, err := s.Input(ctx, roomID, join, "remote.test")
	if err != nil {
		t.Fatal(err)
	}
	m1 := remoteEvent(t, s, remote, roomID, &proto{Type: "m.room.message", Sender: ruser, Content: MustJSON(map[string]string{"body": "1"})}, joinEv.ID)
	first, err := parseEvent("11", "", m1)
	if err != nil {
		t.Fatal(err)
	}
	// The second message builds on the first, which is not stored: build it by hand.
	rs, _ := s.loadRoom(ctx, roomID)
	var auth []ref
	for _, x := range first.PDU.AuthEvents {
		for _, e := range rs.state {
			if e.ID == x {
				auth = append(auth, ref{e.ID, e.PDU.Hashes})
			}
		}
	}
	second, err := remote.buildEvent(rs.version, roomID, &proto{Type: "m.room.message", Sender: ruser, Content: MustJSON(map[string]string{"body": "2"})},
		[]ref{{first.ID, first.PDU.Hashes}}, auth, first.PDU.Depth+1, first.PDU.OriginServerTS+1)
	if err != nil {
		t.Fatal(err)
	}
	topic := &request{makers: []maker{func(*roomState) (*proto, error) {
		return &proto{Type: "m.room.topic", StateKey: stateKeyPtr(""), Sender: user("owner"), Content: MustJSON(map[string]string{"topic": "local"})}, nil
	}}}
	g := &remoteGroup{}
	r1 := &remoteInput{raw: m1, origin: "remote.test", group: g}
	r2 := &remoteInput{raw: second.JSON, origin: "remote.test", group: g}
	g.members = []*remoteInput{r1, r2}
	res := s.submitGroup(ctx, roomID, []*request{topic, {remote: r1}, {remote: r2}})
	for i, r := range res {
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
	}
	topicID, secondID := res[0].events[0].ID, res[2].events[0].ID
	if res[1].events[0].SoftFailed || res[2].events[0].SoftFailed {
		t.Fatal("a remote message was soft-failed")
	}
	row, _ = s.db.GetRoom(ctx, string(roomID))
	got := slices.Sorted(slices.Values(row.Extremities))
	want := slices.Sorted(slices.Values([]string{string(topicID), string(secondID)}))
	if !slices.Equal(got, want) {
		t.Fatalf("extremities %v, want the topic and the second message %v", got, want)
	}
	if rs, err := s.loadRoom(ctx, roomID); err != nil || rs.get("m.room.topic", "") == nil || rs.get("m.room.topic", "").ID != topicID {
		t.Fatalf("topic not the local one: %v", err)
	}
	for _, x := range []id.EventID{first.ID, secondID} {
		if se, err := s.db.GetEvent(ctx, string(x)); err != nil || se.Outlier {
			t.Fatalf("%s: %+v %v", x, se, err)
		}
	}
}
