package roomserver

import (
	"context"
	"fmt"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// TestPowerLevelRange: levels are integers within canonical JSON's range,
// read from their text (2^53+1 would read as the float 2^53).
func TestPowerLevelRange(t *testing.T) {
	for raw, ok := range map[string]bool{
		"9007199254740991": true, "-9007199254740991": true, "0": true,
		"9007199254740992": false, "9007199254740993": false, "-9007199254740992": false, "1.5": false, "1e3": false,
	} {
		err := validatePowerLevels("11", []byte(fmt.Sprintf(`{"users":{"@a:b.c":%s},"ban":%s}`, raw, raw)))
		if (err == nil) != ok {
			t.Errorf("level %s: err %v, want valid %v", raw, err, ok)
		}
	}
}

// TestDepthStaysCanonical: after a remote event at the largest depth
// canonical JSON carries, local events can still be built and signed.
func TestDepthStaysCanonical(t *testing.T) {
	remoteKey := mfed.GenerateSigningKey()
	s := newTestServerWith(t, Options{Keys: fixedKeys{"remote.test": remoteKey}})
	ctx := context.Background()
	remote := &Server{key: remoteKey, serverName: "remote.test"}
	roomID, err := s.CreateRoom(ctx, user("owner"), &CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := s.loadRoom(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	ruser := id.UserID("@r:remote.test")
	p := &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(ruser)), Sender: ruser, Content: MustJSON(map[string]string{"membership": "join"})}
	var auth []ref
	for _, k := range (&pdu.PDU{Type: p.Type, StateKey: p.StateKey, Sender: p.Sender, Content: jsonValue(p.Content)}).AuthEventSelection(rs.version) {
		if e := rs.state[k]; e != nil {
			auth = append(auth, ref{e.ID, e.PDU.Hashes})
		}
	}
	head := rs.extremities[0]
	join, err := remote.buildEvent(rs.version, roomID, p, []ref{{head.ID, head.PDU.Hashes}}, auth, maxCanonicalInt, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Input(ctx, roomID, join.JSON, "remote.test"); err != nil {
		t.Fatal(err)
	}
	evID, err := s.Send(ctx, SendRequest{Sender: user("owner"), RoomID: roomID, Type: "m.room.message", Content: []byte(`{"body":"after"}`)})
	if err != nil {
		t.Fatalf("local event after a remote one at depth 2^53-1: %v", err)
	}
	se, err := s.db.GetEvent(ctx, string(evID))
	if err != nil {
		t.Fatal(err)
	}
	if se.Depth != maxCanonicalInt {
		t.Errorf("depth %d, want %d", se.Depth, int64(maxCanonicalInt))
	}
}
