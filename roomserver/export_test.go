package roomserver

import (
	"context"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// RemoteMembership builds, as userID's server (signing with key) would, an
// m.room.member event of userID on top of the room's forward extremities, for
// tests outside the package to pass to Input.
func RemoteMembership(t *testing.T, s *Server, key *mfed.SigningKey, roomID id.RoomID, userID id.UserID, membership string) []byte {
	t.Helper()
	row, err := s.db.GetRoom(context.Background(), string(roomID))
	if err != nil {
		t.Fatal(err)
	}
	prevs := make([]id.EventID, len(row.Extremities))
	for i, x := range row.Extremities {
		prevs[i] = id.EventID(x)
	}
	remote := &Server{key: key, serverName: userID.Homeserver()}
	return remoteEvent(t, s, remote, roomID, &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(userID)), Sender: userID,
		Content: MustJSON(map[string]string{"membership": membership})}, prevs...)
}
