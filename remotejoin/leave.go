package remotejoin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// Out-of-band memberships (roomserver/outofband.go): a local user's invite,
// knock or leave of a room this server is not in. Accepting such an invite
// is a remote join (Join asks the inviter's server first); rejecting it or
// withdrawing a knock is make_leave/send_leave here; a knock is
// make_knock/send_knock (knock.go).

// OutOfBandRooms is what out-of-band memberships need of the writer (roomserver).
type OutOfBandRooms interface {
	OutOfBand(ctx context.Context, user id.UserID, roomID id.RoomID) (*roomserver.OutOfBandMembership, error)
	SignLeave(roomID id.RoomID, version id.RoomVersion, template []byte, user id.UserID, reason string) ([]byte, id.EventID, error)
	SignKnock(roomID id.RoomID, version id.RoomVersion, template []byte, user id.UserID, reason string) ([]byte, id.EventID, error)
	RecordOutOfBand(ctx context.Context, roomID id.RoomID, version id.RoomVersion, raw []byte, knockState []json.RawMessage) error
	RejectLocally(ctx context.Context, user id.UserID, roomID id.RoomID) error
}

// MembershipClient is the federation client's leave and knock handshakes
// (mautrix's federation.Client); send_knock goes through MakeFullRequest to
// read both names of its stripped state.
type MembershipClient interface {
	MakeLeave(ctx context.Context, req *mfed.ReqMakeLeave) (*mfed.RespMakeLeave, error)
	SendLeave(ctx context.Context, req *mfed.ReqSendLeave) error
	MakeKnock(ctx context.Context, req *mfed.ReqMakeKnock) (*mfed.RespMakeKnock, error)
	MakeFullRequest(ctx context.Context, params mfed.RequestParams) ([]byte, *http.Response, error)
}

// inviterFirst puts the server of the user who invited user to roomID (an
// out-of-band invite) before the servers given: it is in the room; the
// servers of the invite's stripped state come after them.
func (j *Joiner) inviterFirst(ctx context.Context, user id.UserID, roomID id.RoomID, servers []string) []string {
	if j.oob == nil {
		return servers
	}
	o, err := j.oob.OutOfBand(ctx, user, roomID)
	if err != nil || o.Membership != "invite" {
		return servers
	}
	return append(append([]string{o.Sender.Homeserver()}, servers...), o.Servers...)
}

// Leave rejects user's out-of-band invite of roomID, or withdraws their
// knock: make_leave/send_leave through the inviter's server, then those of
// the stripped state's senders, then the room ID's. The leave is recorded out of band, so /sync moves the room to
// leave. If no server accepts it, the invite is rejected locally (as Synapse
// does): the user is rid of it, the room's servers still think them invited.
// ErrNotFound (a roomserver kind) if the user holds no such membership.
func (j *Joiner) Leave(ctx context.Context, user id.UserID, roomID id.RoomID, reason string) error {
	if j.oob == nil || j.members == nil {
		return roomserver.NotFound("Unknown room")
	}
	o, err := j.oob.OutOfBand(ctx, user, roomID)
	if err != nil {
		return err
	}
	if o.Membership != "invite" && o.Membership != "knock" {
		return nil // left already
	}
	var last error
	// The inviter's server (ours for a knock: dropped), the stripped
	// state's, then the room ID's.
	for _, server := range j.Candidates(roomID, append([]string{o.Sender.Homeserver()}, o.Servers...)) {
		err := j.leaveVia(ctx, user, roomID, server, o.RoomVersion, reason)
		if err == nil {
			return nil
		}
		slog.Info("remotejoin: leave failed", "room", roomID, "server", server, "err", err)
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	slog.Warn("remotejoin: no server took the leave; rejecting locally", "room", roomID, "user", user, "err", last)
	return j.oob.RejectLocally(context.WithoutCancel(ctx), user, roomID)
}

func (j *Joiner) leaveVia(ctx context.Context, user id.UserID, roomID id.RoomID, server string, known id.RoomVersion, reason string) error {
	ml, err := j.members.MakeLeave(ctx, &mfed.ReqMakeLeave{RoomID: roomID, UserID: user, Via: server})
	if err != nil {
		return fmt.Errorf("make_leave via %s: %w", server, err)
	}
	version := ml.RoomVersion
	if version == "" {
		version = known
	}
	leave, eventID, err := j.oob.SignLeave(roomID, version, ml.Event, user, reason)
	if err != nil {
		return err
	}
	if err := j.members.SendLeave(ctx, &mfed.ReqSendLeave{RoomID: roomID, EventID: eventID, Event: leave, Via: server}); err != nil {
		return fmt.Errorf("send_leave via %s: %w", server, err)
	}
	err = j.oob.RecordOutOfBand(context.WithoutCancel(ctx), roomID, version, leave, nil)
	if errors.Is(err, roomserver.ErrConflict) {
		return nil // the room became known meanwhile; its events tell the rest
	}
	return err
}
