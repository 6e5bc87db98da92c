package clientapi

import (
	"context"
	"log/slog"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// RemoteInvites invites users of other servers: the invitee's server signs
// the invite before it is stored (remotejoin).
type RemoteInvites interface {
	Invite(ctx context.Context, a roomserver.MembershipAction) error
}

// isRemoteInvite: an invite of a user of another server, sent over
// federation when it is on (off: the roomserver refuses it, 403).
func (a *API) isRemoteInvite(act roomserver.MembershipAction) bool {
	if a.RemoteInvites == nil || act.Action != "invite" || !roomserver.ValidUserID(string(act.Target)) {
		return false
	}
	return act.Target.Homeserver() != a.Config.ServerName
}

// splitRemoteInvites takes the users of other servers out of a createRoom
// invite list when federation is on: they are invited over federation once
// the room exists (inviteRemotes). Invalid or too many entries stay for the
// roomserver to refuse.
func (a *API) splitRemoteInvites(req *roomserver.CreateRoomRequest) []id.UserID {
	if a.RemoteInvites == nil || len(req.Invite) > roomserver.MaxCreateInvites {
		return nil
	}
	var local []string
	var remote []id.UserID
	for _, u := range req.Invite {
		if roomserver.ValidUserID(u) && id.UserID(u).Homeserver() != a.Config.ServerName {
			remote = append(remote, id.UserID(u))
		} else {
			local = append(local, u)
		}
	}
	req.Invite = local
	return remote
}

// maxParallelInvites bounds the invitee servers one createRoom asks at once.
const maxParallelInvites = 8

// inviteRemotes invites createRoom's remote invitees. The room exists
// already, so a failed invite does not fail the request (as an invite the
// invitee's filter refuses; MSC4380): it is logged.
func (a *API) inviteRemotes(ctx context.Context, sender id.UserID, roomID id.RoomID, users []id.UserID, isDirect bool) {
	sem := make(chan struct{}, maxParallelInvites)
	var wg sync.WaitGroup
	for _, u := range users {
		if u == sender {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := a.RemoteInvites.Invite(ctx, roomserver.MembershipAction{Sender: sender, RoomID: roomID, Target: u, Action: "invite", IsDirect: isDirect})
			if err != nil {
				slog.Info("createRoom: remote invite failed", "room", roomID, "invitee", u, "err", err)
			}
		}()
	}
	wg.Wait()
}
