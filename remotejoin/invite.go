package remotejoin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
)

// Outbound invites of users of other servers (server-server API, "Inviting
// to a room"): the roomserver builds and signs the invite without storing
// it, the invitee's server signs it too (PUT /v2/invite, /v1/invite for a
// server without v2), the roomserver verifies the returned event and
// persists it; the federation sender then delivers it to the room's servers
// like any event of ours.

// InviteRooms is what an outbound invite needs of the writer (roomserver).
type InviteRooms interface {
	PrepareInvite(ctx context.Context, a roomserver.MembershipAction) (*roomserver.RemoteInvite, error)
	CompleteInvite(ctx context.Context, inv *roomserver.RemoteInvite, returned []byte) (id.EventID, error)
}

// InviteClient is the federation client's invite request (mautrix's
// federation.Client; MakeFullRequest for the v1 fallback).
type InviteClient interface {
	SendInvite(ctx context.Context, req *mfed.ReqSendInvite) (*mfed.RespSendInvite, error)
	MakeFullRequest(ctx context.Context, params mfed.RequestParams) ([]byte, *http.Response, error)
}

// ServerPolicy says whether we may send an invite to a server (the
// federation policy, purpose "invite").
type ServerPolicy interface {
	AllowServer(ctx context.Context, server string) bool
}

// Inviter sends invites of users of other servers.
type Inviter struct {
	rooms  InviteRooms
	client InviteClient
	policy ServerPolicy
	res    Residency
}

// NewInviter builds an inviter from o's Invites, InviteClient and Policy.
func NewInviter(o Options) *Inviter {
	return &Inviter{rooms: o.Invites, client: o.InviteClient, policy: o.Policy, res: o.Residency}
}

// Invite has a.Sender invite a.Target, a user of another server, to
// a.RoomID. A server the policy refuses is not asked (403); a refusal by the
// invitee's server is 403 M_FORBIDDEN with its reason; an unreachable server
// or one that fails is 502 M_UNKNOWN; a returned event that is not our invite
// signed by that server is 403. In every failure nothing is stored.
func (i *Inviter) Invite(ctx context.Context, a roomserver.MembershipAction) error {
	server := a.Target.Homeserver()
	if server == "" {
		return roomserver.InvalidParam("Invalid user ID")
	}
	if i.policy != nil && !i.policy.AllowServer(ctx, server) {
		return roomserver.Forbidden("Federation with %s is not allowed by this server's policy", server)
	}
	// The data-localization policy: the room's zone must admit the
	// invitee's server (and be encrypted if it requires so), decided
	// before anything is sent.
	if i.res != nil && i.res.Enabled() {
		if d := i.res.Join(ctx, string(a.RoomID), server); !d.Allowed {
			i.res.Refused(d, server, "invite", string(a.RoomID))
			return roomserver.Forbidden("%s", d.Reason)
		}
	}
	inv, err := i.rooms.PrepareInvite(ctx, a)
	if err != nil {
		return err
	}
	returned, err := i.send(ctx, inv)
	if err != nil {
		slog.Info("remotejoin: invite failed", "room", a.RoomID, "invitee", a.Target, "err", err)
		return inviteError(server, err)
	}
	_, err = i.rooms.CompleteInvite(ctx, inv, returned)
	return err
}

// send asks the invitee's server to sign inv: v2, then v1 when the server
// does not know v2 (404, or 400 M_UNRECOGNIZED).
func (i *Inviter) send(ctx context.Context, inv *roomserver.RemoteInvite) ([]byte, error) {
	state := make([]mfed.PDU, len(inv.RoomState))
	for n, s := range inv.RoomState {
		state[n] = mfed.PDU(s)
	}
	resp, err := i.client.SendInvite(ctx, &mfed.ReqSendInvite{RoomID: inv.RoomID, UserID: inv.Invitee, EventID: inv.EventID,
		Event: inv.Event, InviteRoomState: state, RoomVersion: inv.RoomVersion})
	if err == nil {
		if resp == nil || len(resp.Event) == 0 {
			return nil, errors.New("the invitee's server answered no event")
		}
		return resp.Event, nil
	}
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return nil, err
	}
	code := ""
	if httpErr.RespError != nil {
		code = httpErr.RespError.ErrCode
	}
	if st := httpErr.Response.StatusCode; st != http.StatusNotFound && !(st == http.StatusBadRequest && code == "M_UNRECOGNIZED") {
		return nil, err
	}
	// v1: the event itself, invite_room_state in its unsigned; the answer is [200, {"event": …}].
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(inv.Event, &ev); err != nil {
		return nil, err
	}
	ev["unsigned"] = roomserver.MustJSON(map[string]any{"invite_room_state": inv.RoomState})
	raw, _, err := i.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: inv.Invitee.Homeserver(), Method: http.MethodPut,
		Path: mfed.URLPath{"v1", "invite", inv.RoomID, inv.EventID}, Authenticate: true, RequestJSON: ev})
	if err != nil {
		return nil, err
	}
	got := gjson.GetBytes(raw, "1.event")
	if !got.IsObject() {
		return nil, errors.New("the invitee's server answered no event")
	}
	return []byte(got.Raw), nil
}

// inviteError is the client's answer to a failed request to the invitee's
// server: its refusal (a 4xx) is 403 M_FORBIDDEN with its reason; a server
// that could not be reached or failed is 502 M_UNKNOWN (the invite may be
// retried; nothing was stored).
func inviteError(server string, err error) error {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode >= 400 && httpErr.Response.StatusCode < 500 {
		reason := http.StatusText(httpErr.Response.StatusCode)
		if httpErr.RespError != nil && httpErr.RespError.Err != "" {
			reason = httpErr.RespError.Err
		}
		if len(reason) > 500 {
			reason = reason[:500]
		}
		return roomserver.Forbidden("%s refused the invite: %s", server, reason)
	}
	return &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: "The invitee's server could not be asked: " + server}
}
