package clientapi

import (
	"context"
	"strings"

	"maunium.net/go/mautrix/id"
)

// departedRoom is the room a join of target (a room ID or one of our
// aliases) names when that join must go over federation though the room is
// known here: no local user is in it any more, so our copy is stale
// (remotejoin.Joiner.MustJoinRemotely). A remote alias is resolved before
// this; an unknown alias or room is not departed.
func (a *API) departedRoom(ctx context.Context, target string) (id.RoomID, bool) {
	if a.RemoteJoins == nil {
		return "", false
	}
	roomID, ok := a.departedRoomID(ctx, target)
	if !ok {
		return "", false
	}
	return roomID, a.RemoteJoins.MustJoinRemotely(ctx, roomID)
}

// departedRoomID is the room ID a join's target names: a room ID, or one of
// our aliases resolved.
func (a *API) departedRoomID(ctx context.Context, target string) (id.RoomID, bool) {
	roomID := id.RoomID(target)
	if strings.HasPrefix(target, "#") {
		if a.Directory == nil {
			return "", false
		}
		info, err := a.Directory.GetAlias(ctx, target)
		if err != nil {
			return "", false
		}
		roomID = info.RoomID
	} else if !strings.HasPrefix(target, "!") {
		return "", false
	}
	return roomID, true
}
