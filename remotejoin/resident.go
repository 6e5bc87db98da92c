package remotejoin

import (
	"context"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// ResidentRooms is what joining a room this server is in through another
// resident needs of the writer (roomserver).
type ResidentRooms interface {
	ResidentServers(ctx context.Context, roomID id.RoomID) ([]string, error)
	Input(ctx context.Context, roomID id.RoomID, raw []byte, origin string) (*roomserver.Event, error)
}

// JoinThroughResident joins user to a restricted room this server is in but
// whose join no local member may authorise (roomserver.ErrUnableToAuthoriseJoin
// from the local join): another resident server may (server-server API,
// restricted rooms; Synapse does the same; Complement's
// TestRestrictedRoomsRemoteJoinLocalUser). make_join/send_join go to the
// servers the client named, then the room's other joined servers; the join,
// co-signed by that server, is then input as a received event (we have the
// room, so no state is imported). The last failure is returned.
func (j *Joiner) JoinThroughResident(ctx context.Context, user id.UserID, roomID id.RoomID, servers []string) error {
	if j.residents == nil {
		return roomserver.NotFound("No resident server to join through")
	}
	others, err := j.residents.ResidentServers(ctx, roomID)
	if err != nil {
		return err
	}
	candidates := j.Candidates("", append(slices.Clone(servers), others...))
	if len(candidates) == 0 {
		return roomserver.Forbidden("No server in the room can authorise this join")
	}
	if _, candidates, err = j.admitCandidates(ctx, roomID, candidates, "join"); err != nil {
		return err
	}
	var last error
	for _, server := range candidates {
		if last = j.joinKnownVia(ctx, user, roomID, server); last == nil {
			return nil
		}
		slog.Info("remotejoin: join through a resident failed", "room", roomID, "server", server, "err", last)
		if ctx.Err() != nil {
			break
		}
	}
	var rErr *roomserver.Error
	if errors.As(last, &rErr) {
		return last
	}
	return roomserver.Forbidden("No server could authorise this join: %v", last)
}

func (j *Joiner) joinKnownVia(ctx context.Context, user id.UserID, roomID id.RoomID, server string) error {
	mj, err := j.client.MakeJoin(ctx, &mfed.ReqMakeJoin{RoomID: roomID, UserID: user, Via: server, SupportedVersions: j.versions})
	if err != nil {
		return fmt.Errorf("make_join via %s: %w", server, err)
	}
	version := mj.RoomVersion
	if version == "" {
		version = "1"
	}
	if !slices.Contains(j.versions, version) || version.EventIDFormat() == id.EventIDFormatCustom {
		return roomserver.NewError(roomserver.ErrUnsupportedRoomVersion, "Room version %q is not supported here", version)
	}
	join, eventID, err := j.rooms.SignJoin(roomID, version, mj.Event, user)
	if err != nil {
		return err
	}
	sj, err := j.client.SendJoin(ctx, &mfed.ReqSendJoin{RoomID: roomID, EventID: eventID, Event: join, Via: server})
	if err != nil {
		return fmt.Errorf("send_join via %s: %w", server, err)
	}
	// The resident's copy carries its signature of the restricted join.
	if len(sj.Event) > 0 {
		var p pdu.PDU
		if jsonv2.Unmarshal(sj.Event, &p) == nil {
			if got, err := p.GetEventID(version); err == nil && got == eventID {
				join = sj.Event
			}
		}
	}
	if _, err := j.residents.Input(ctx, roomID, join, server); err != nil {
		return fmt.Errorf("storing the join authorised by %s: %w", server, err)
	}
	return nil
}
