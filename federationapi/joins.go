package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/roomserver"
)

// Joins are the writer's operations behind make_join and send_join.
type Joins interface {
	MakeJoin(ctx context.Context, roomID id.RoomID, user id.UserID) (*roomserver.JoinTemplate, error)
	SendJoin(ctx context.Context, roomID id.RoomID, eventID id.EventID, raw []byte, origin string) (*roomserver.JoinResult, error)
	OmitMembers(ctx context.Context, roomID id.RoomID, res *roomserver.JoinResult) (*roomserver.JoinResult, error)
}

// maxVersions bounds the ver parameters of one make_join.
const maxVersions = 64

// joinAnswer is roomAnswer plus the join-specific kinds.
func joinAnswer(err error) error {
	if errors.Is(err, roomserver.ErrUnableToAuthoriseJoin) {
		var rErr *roomserver.Error
		errors.As(err, &rErr)
		return mxhttp.UnableToAuthorize("%s", rErr.Message)
	}
	if errors.Is(err, roomserver.ErrUnableToGrantJoin) {
		var rErr *roomserver.Error
		errors.As(err, &rErr)
		return mxhttp.UnableToGrant("%s", rErr.Message)
	}
	return roomAnswer(err)
}

// GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=…: a join
// template for a user of the requesting server, when the room's version is
// one it supports and the join rules let the user in.
func (a *API) makeJoin(r *http.Request) (any, error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	userID, err := originUserParam(r, origin)
	if err != nil {
		return nil, err
	}
	vers := r.URL.Query()["ver"]
	if len(vers) > maxVersions {
		return nil, mxhttp.InvalidParam("At most %d ver parameters", maxVersions)
	}
	if err := a.knownRoom(ctx, roomID); err != nil {
		return nil, err
	}
	if err := a.admitJoin(r, string(roomID), origin); err != nil {
		return nil, err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return nil, err
	}
	version, err := roomserver.RoomVersion(ctx, a.store, roomID)
	if err != nil {
		return nil, roomAnswer(err)
	}
	// Without ver the server supports version 1 only (spec: "Defaults to [1]").
	if !slices.Contains(vers, string(version)) && !(len(vers) == 0 && version == "1") {
		return nil, mxhttp.IncompatibleRoomV("The room's version %s is not among those your server supports", version).
			With("room_version", string(version))
	}
	tmpl, err := a.joins.MakeJoin(ctx, roomID, userID)
	if err != nil {
		return nil, joinAnswer(err)
	}
	return map[string]any{"room_version": tmpl.RoomVersion, "event": tmpl.Event}, nil
}

// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}: accept the signed
// join of a user of the requesting server and answer the state before it.
// With omit_members=true (MSC3706) the answer is the partial state
// (roomserver.OmitMembers) with members_omitted true.
func (a *API) sendJoin(r *http.Request) (any, error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	eventID, err := eventIDParam(mxhttp.PathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	omit, err := omitMembersParam(r.URL.Query()["omit_members"])
	if err != nil {
		return nil, err
	}
	if err := a.knownRoom(ctx, roomID); err != nil {
		return nil, err
	}
	if err := a.admitJoin(r, string(roomID), origin); err != nil {
		return nil, err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return nil, err
	}
	raw, err := readPDU(r)
	if err != nil {
		return nil, err
	}
	res, err := a.joins.SendJoin(ctx, roomID, id.EventID(eventID), raw, origin)
	if err != nil {
		return nil, joinAnswer(err)
	}
	if omit {
		if res, err = a.joins.OmitMembers(ctx, roomID, res); err != nil {
			return nil, roomAnswer(err)
		}
	}
	a.served(r, origin, residency.Events, string(roomID), len(res.State)+len(res.AuthChain))
	return map[string]any{
		"origin":          a.serverName,
		"event":           json.RawMessage(res.Event.JSON),
		"state":           pdus(res.State),
		"auth_chain":      pdus(res.AuthChain),
		"members_omitted": omit,
		"servers_in_room": res.Servers,
	}, nil
}

// omitMembersParam reads send_join's omit_members: absent or "false" is
// false, "true" is true, anything else (or the parameter twice) is 400
// M_INVALID_PARAM.
func omitMembersParam(vals []string) (bool, error) {
	switch {
	case len(vals) == 0:
		return false, nil
	case len(vals) == 1 && vals[0] == "true":
		return true, nil
	case len(vals) == 1 && vals[0] == "false":
		return false, nil
	}
	return false, mxhttp.InvalidParam("omit_members must be true or false")
}

// PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}: the deprecated
// form (servers that predate v2, room versions 1 and 2 among them): the same
// join, answered [200, {origin, state, auth_chain, event}] and without
// omit_members.
func (a *API) sendJoinV1(r *http.Request) (any, error) {
	q := r.URL.Query()
	q.Del("omit_members")
	r.URL.RawQuery = q.Encode()
	res, err := a.sendJoin(r)
	if err != nil {
		return nil, err
	}
	m := res.(map[string]any)
	delete(m, "members_omitted")
	delete(m, "servers_in_room")
	return []any{200, m}, nil
}
