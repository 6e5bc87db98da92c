package remotejoin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// respSendKnock is send_knock's answer: knock_room_state (the spec), or
// knock_state_events (what older servers send).
type respSendKnock struct {
	KnockRoomState   []json.RawMessage `json:"knock_room_state"`
	KnockStateEvents []json.RawMessage `json:"knock_state_events"`
}

// Knock knocks on roomID, a room this server is not in, for user through
// the first candidate server (given servers, then the room ID's) that
// accepts: make_knock, the template signed by the roomserver (SignKnock),
// send_knock. The knock is recorded out of band with the stripped state the
// answer carried, so /sync shows the room under knock.
func (j *Joiner) Knock(ctx context.Context, user id.UserID, roomID id.RoomID, servers []string, reason string) error {
	if j.oob == nil || j.members == nil {
		return roomserver.NotFound("No known servers for this room")
	}
	candidates := j.Candidates(roomID, servers)
	if len(candidates) == 0 {
		return roomserver.NotFound("No known servers for this room")
	}
	candidates, err := j.admitKnock(ctx, roomID, candidates)
	if err != nil {
		return err
	}
	var last error
	for _, server := range candidates {
		err := j.knockVia(ctx, user, roomID, server, reason)
		if err == nil {
			return nil
		}
		slog.Info("remotejoin: knock failed", "room", roomID, "server", server, "err", err)
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	var rErr *roomserver.Error
	if errors.As(last, &rErr) {
		return last
	}
	if statusOf(last) == 403 {
		return roomserver.Forbidden("Knocking was refused: %v", last)
	}
	return roomserver.NotFound("No server could take the knock: %v", last)
}

func (j *Joiner) knockVia(ctx context.Context, user id.UserID, roomID id.RoomID, server, reason string) error {
	mk, err := j.members.MakeKnock(ctx, &mfed.ReqMakeKnock{RoomID: roomID, UserID: user, Via: server, SupportedVersions: j.versions})
	if err != nil {
		return fmt.Errorf("make_knock via %s: %w", server, err)
	}
	version := mk.RoomVersion
	if !slices.Contains(j.versions, version) {
		return roomserver.NewError(roomserver.ErrUnsupportedRoomVersion, "Room version %q is not supported", version)
	}
	if !version.Knocks() {
		return roomserver.Forbidden("Room version %s does not support knocking", version)
	}
	knock, eventID, err := j.oob.SignKnock(roomID, version, mk.Event, user, reason)
	if err != nil {
		return err
	}
	var resp respSendKnock
	if _, _, err := j.members.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodPut,
		Path: mfed.URLPath{"v1", "send_knock", roomID, eventID}, Authenticate: true, RequestJSON: json.RawMessage(knock),
		ResponseJSON: &resp}); err != nil {
		return fmt.Errorf("send_knock via %s: %w", server, err)
	}
	state := resp.KnockRoomState
	if state == nil {
		state = resp.KnockStateEvents
	}
	err = j.oob.RecordOutOfBand(context.WithoutCancel(ctx), roomID, version, knock, state)
	if errors.Is(err, roomserver.ErrConflict) {
		return nil // the room became known meanwhile
	}
	return err
}
