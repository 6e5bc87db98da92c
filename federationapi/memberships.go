package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Memberships are the writer's operations behind make_leave/send_leave and
// make_knock/send_knock (roomserver): users of the requesting server leaving
// or knocking on a room this server is in.
type Memberships interface {
	MakeMembership(ctx context.Context, roomID id.RoomID, user id.UserID, membership string) (*roomserver.JoinTemplate, error)
	SendLeave(ctx context.Context, roomID id.RoomID, eventID id.EventID, raw []byte, origin string) (*storage.Event, error)
	SendKnock(ctx context.Context, roomID id.RoomID, eventID id.EventID, raw []byte, origin string) ([]json.RawMessage, error)
}

// mountMemberships adds the leave and knock handshakes.
func (a *API) mountMemberships(r chi.Router) {
	if a.memberships == nil {
		return
	}
	r.Get("/v1/make_leave/{roomId}/{userId}", mxhttp.JSON(a.makeLeave).ServeHTTP)
	r.Put("/v1/send_leave/{roomId}/{eventId}", mxhttp.JSON(a.sendLeaveV1).ServeHTTP)
	r.Put("/v2/send_leave/{roomId}/{eventId}", mxhttp.JSON(a.sendLeaveV2).ServeHTTP)
	r.Get("/v1/make_knock/{roomId}/{userId}", mxhttp.JSON(a.makeKnock).ServeHTTP)
	r.Put("/v1/send_knock/{roomId}/{eventId}", mxhttp.JSON(a.sendKnock).ServeHTTP)
}

// membershipAnswer is roomAnswer plus the incompatible version of a knock.
func membershipAnswer(err error, version id.RoomVersion) error {
	if errors.Is(err, roomserver.ErrIncompatibleRoomVersion) {
		var rErr *roomserver.Error
		errors.As(err, &rErr)
		return mxhttp.IncompatibleRoomV("%s", rErr.Message).With("room_version", string(version))
	}
	return roomAnswer(err)
}

// originUserParam is the {userId} parameter, which must be a user of the
// requesting server (403 otherwise).
func originUserParam(r *http.Request, origin string) (id.UserID, error) {
	userID := id.UserID(mxhttp.PathParam(r, "userId"))
	_, server, err := userID.ParseAndValidateRelaxed()
	if err != nil || len(userID) > roomserver.MaxFieldBytes {
		return "", mxhttp.InvalidParam("Invalid user ID")
	}
	if server != origin {
		return "", mxhttp.Forbidden("User %s does not belong to %s", userID, origin)
	}
	return userID, nil
}

// roomForOrigin checks the {roomId} parameter names a room we know (404)
// whose residency admits the origin (to its events; a knock as a join) and
// whose server ACL admits it (403).
func (a *API) roomForOrigin(r *http.Request, origin string) (id.RoomID, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return "", err
	}
	if err := a.knownRoom(r.Context(), roomID); err != nil {
		return "", err
	}
	var admit error
	if strings.Contains(endpoint(r), "knock") {
		admit = a.admitJoin(r, string(roomID), origin)
	} else {
		admit = a.admitRoom(r, string(roomID), origin, residency.Events)
	}
	if admit != nil {
		return "", admit
	}
	if err := a.checkACL(r.Context(), roomID, origin); err != nil {
		return "", err
	}
	return roomID, nil
}

// readPDU reads a request body that is one PDU: at most MaxPDUBytes of JSON.
func readPDU(r *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, roomserver.MaxPDUBytes+1))
	if err != nil {
		return nil, mxhttp.BadJSON("Reading the body: %v", err)
	}
	if len(raw) > roomserver.MaxPDUBytes {
		return nil, mxhttp.TooLarge("The event exceeds %d bytes", roomserver.MaxPDUBytes)
	}
	if !json.Valid(raw) {
		return nil, mxhttp.NotJSON("The body is not JSON")
	}
	return raw, nil
}

// makeMembership is make_leave and make_knock: a template of membership for
// a user of the requesting server. vers are the versions the server
// supports (make_knock's ver; nil: not asked).
func (a *API) makeMembership(r *http.Request, membership string, vers []string) (any, error) {
	origin := federation.Origin(r.Context())
	roomID, err := a.roomForOrigin(r, origin)
	if err != nil {
		return nil, err
	}
	userID, err := originUserParam(r, origin)
	if err != nil {
		return nil, err
	}
	version, err := roomserver.RoomVersion(r.Context(), a.store, roomID)
	if err != nil {
		return nil, roomAnswer(err)
	}
	if vers != nil && !slices.Contains(vers, string(version)) {
		return nil, mxhttp.IncompatibleRoomV("The room's version %s is not among those your server supports", version).
			With("room_version", string(version))
	}
	tmpl, err := a.memberships.MakeMembership(r.Context(), roomID, userID, membership)
	if err != nil {
		return nil, membershipAnswer(err, version)
	}
	return map[string]any{"room_version": tmpl.RoomVersion, "event": tmpl.Event}, nil
}

// GET /_matrix/federation/v1/make_leave/{roomId}/{userId}: a leave template
// for a user of the requesting server who is joined, invited or knocking.
func (a *API) makeLeave(r *http.Request) (any, error) {
	return a.makeMembership(r, "leave", nil)
}

// GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=…: a knock
// template, for a room whose version (among ver, which is required) and join
// rules allow knocking.
func (a *API) makeKnock(r *http.Request) (any, error) {
	vers := r.URL.Query()["ver"]
	if len(vers) > maxVersions {
		return nil, mxhttp.InvalidParam("At most %d ver parameters", maxVersions)
	}
	if len(vers) == 0 {
		return nil, mxhttp.MissingParam("ver is required")
	}
	return a.makeMembership(r, "knock", vers)
}

// sentMember reads the room, event ID and body every send_leave/send_knock has.
func (a *API) sentMember(r *http.Request) (id.RoomID, id.EventID, []byte, error) {
	origin := federation.Origin(r.Context())
	roomID, err := a.roomForOrigin(r, origin)
	if err != nil {
		return "", "", nil, err
	}
	eventID, err := eventIDParam(mxhttp.PathParam(r, "eventId"))
	if err != nil {
		return "", "", nil, err
	}
	raw, err := readPDU(r)
	if err != nil {
		return "", "", nil, err
	}
	return roomID, id.EventID(eventID), raw, nil
}

func (a *API) sendLeave(r *http.Request) error {
	roomID, eventID, raw, err := a.sentMember(r)
	if err != nil {
		return err
	}
	_, err = a.memberships.SendLeave(r.Context(), roomID, eventID, raw, federation.Origin(r.Context()))
	return roomAnswer(err)
}

// PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}: accept the signed
// leave of a user of the requesting server; the answer is {}.
func (a *API) sendLeaveV2(r *http.Request) (any, error) {
	if err := a.sendLeave(r); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}: as v2, answered
// [200, {}] (the v1 API's historical shape).
func (a *API) sendLeaveV1(r *http.Request) (any, error) {
	if err := a.sendLeave(r); err != nil {
		return nil, err
	}
	return []any{200, map[string]any{}}, nil
}

// PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}: accept the signed
// knock of a user of the requesting server; the answer is the stripped state
// shown to the knocker (the create event whole, as room versions 12+ need).
func (a *API) sendKnock(r *http.Request) (any, error) {
	roomID, eventID, raw, err := a.sentMember(r)
	if err != nil {
		return nil, err
	}
	state, err := a.memberships.SendKnock(r.Context(), roomID, eventID, raw, federation.Origin(r.Context()))
	if err != nil {
		version, _ := roomserver.RoomVersion(r.Context(), a.store, roomID)
		return nil, membershipAnswer(err, version)
	}
	return map[string]any{"knock_room_state": state}, nil
}
