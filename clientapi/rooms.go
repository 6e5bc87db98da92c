package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/joinalias"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomview"
)

// Rooms is what the room handlers need from the room writer (roomserver).
type Rooms interface {
	CreateRoom(ctx context.Context, sender id.UserID, req *roomserver.CreateRoomRequest) (id.RoomID, error)
	Send(ctx context.Context, r roomserver.SendRequest) (id.EventID, error)
	Redact(ctx context.Context, sender id.UserID, deviceID id.DeviceID, roomID id.RoomID, eventID id.EventID, reason, txnID string) (id.EventID, error)
	JoinWithContent(ctx context.Context, user id.UserID, roomIDOrAlias string, body map[string]json.RawMessage) (id.RoomID, error)
	Knock(ctx context.Context, user id.UserID, roomIDOrAlias, reason string) (id.RoomID, error)
	ChangeMembership(ctx context.Context, a roomserver.MembershipAction) error
	Forget(ctx context.Context, user id.UserID, roomID id.RoomID) error
	UpgradeWithCreators(ctx context.Context, user id.UserID, oldRoom id.RoomID, newVersion string, additionalCreators []string) (id.RoomID, error)
}

// RemoteJoins joins a local user to a room this server does not know,
// through the candidate servers (remotejoin).
type RemoteJoins interface {
	Join(ctx context.Context, user id.UserID, roomID id.RoomID, servers []string) error
	// Leave rejects an out-of-band invite or withdraws a knock of a room
	// this server is not in; Knock knocks on such a room.
	Leave(ctx context.Context, user id.UserID, roomID id.RoomID, reason string) error
	Knock(ctx context.Context, user id.UserID, roomID id.RoomID, servers []string, reason string) error
	// MustJoinRemotely: the room is known but no local user is in it any more.
	MustJoinRemotely(ctx context.Context, roomID id.RoomID) bool
	// HoldsOutOfBand: user holds an out-of-band invite or knock of roomID
	// (also of a known room we stopped following), which Leave ends.
	HoldsOutOfBand(ctx context.Context, user id.UserID, roomID id.RoomID) bool
	// JoinThroughResident: a restricted room we are in whose join no local
	// member may authorise; another resident server may.
	JoinThroughResident(ctx context.Context, user id.UserID, roomID id.RoomID, servers []string) error
}

// RoomView is what the room read handlers need (roomview): rooms as the
// requesting user may read them.
type RoomView interface {
	State(ctx context.Context, user id.UserID, roomID id.RoomID) ([]json.RawMessage, error)
	StateEvent(ctx context.Context, user id.UserID, roomID id.RoomID, evType, stateKey string) (json.RawMessage, error)
	Event(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID) (json.RawMessage, error)
	Members(ctx context.Context, user id.UserID, roomID id.RoomID, q roomview.MembersQuery) ([]json.RawMessage, error)
	JoinedMembers(ctx context.Context, user id.UserID, roomID id.RoomID) (map[id.UserID]roomview.JoinedMember, error)
	JoinedRooms(ctx context.Context, user id.UserID) ([]id.RoomID, error)
	Messages(ctx context.Context, user id.UserID, roomID id.RoomID, req roomview.MessagesRequest) (*roomview.MessagesResponse, error)
	Context(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID, limit int, filter *roomview.EventFilter) (*roomview.ContextResponse, error)

	RoomsExtras
	RoomsSearch // search.go
}

// roomRoutes are the room endpoints under /r0 and /v3.
func (a *API) roomRoutes(r chi.Router) {
	if a.Rooms == nil {
		return
	}
	r.With(a.rateLimitCreateRoom).Method(http.MethodPost, "/createRoom", mxhttp.JSON(a.createRoom))
	r.Method(http.MethodPost, "/join/{roomIDOrAlias}", mxhttp.JSON(a.joinRoom))
	r.Method(http.MethodPost, "/knock/{roomIDOrAlias}", mxhttp.JSON(a.knockRoom))
	r.Method(http.MethodGet, "/joined_rooms", mxhttp.JSON(a.joinedRooms))
	r.Route("/rooms/{roomID}", func(r chi.Router) {
		r.Method(http.MethodPost, "/join", mxhttp.JSON(a.joinRoom))
		for _, action := range []string{"invite", "leave", "kick", "ban", "unban"} {
			r.Method(http.MethodPost, "/"+action, mxhttp.JSON(a.membership(action)))
		}
		r.Method(http.MethodPost, "/forget", mxhttp.JSON(a.forgetRoom))
		r.Method(http.MethodPut, "/send/{eventType}/{txnID}", mxhttp.JSON(a.sendMessage))
		r.Method(http.MethodPut, "/state/{eventType}", mxhttp.JSON(a.putState))
		r.Method(http.MethodPut, "/state/{eventType}/*", mxhttp.JSON(a.putState))
		r.Method(http.MethodGet, "/state/{eventType}", mxhttp.JSON(a.getState))
		r.Method(http.MethodGet, "/state/{eventType}/*", mxhttp.JSON(a.getState))
		r.Method(http.MethodGet, "/state", mxhttp.JSON(a.roomState))
		r.Method(http.MethodPut, "/redact/{eventID}/{txnID}", mxhttp.JSON(a.redactEvent))
		r.Method(http.MethodGet, "/event/{eventID}", mxhttp.JSON(a.getEvent))
		r.Method(http.MethodGet, "/members", mxhttp.JSON(a.roomMembers))
		r.Method(http.MethodGet, "/joined_members", mxhttp.JSON(a.joinedMembers))
		r.Method(http.MethodGet, "/messages", mxhttp.JSON(a.roomMessages))
		r.Method(http.MethodGet, "/context/{eventID}", mxhttp.JSON(a.eventContext))
	})
	a.directoryRoutes(r)
	a.roomExtraRoutes(r)
}

// roomRoutesV1 are the room endpoints under /v1 (relations, threads, hierarchy, ...).
func (a *API) roomRoutesV1(r chi.Router) {
	if a.Rooms == nil {
		return
	}
	a.roomExtraRoutesV1(r)
}

// readCtx is the request context for the room read APIs: it names the
// requesting device, which is shown the transaction IDs of its own events.
func readCtx(r *http.Request) context.Context {
	d := authn.FromRequest(r)
	return roomview.WithDevice(r.Context(), d.UserID, d.DeviceID)
}

// roomIDParam returns the {roomID} path parameter, validated.
func roomIDParam(r *http.Request) (id.RoomID, error) {
	roomID := mxhttp.PathParam(r, "roomID")
	if !roomserver.ValidRoomID(roomID) {
		return "", mxhttp.InvalidParam("Invalid room ID")
	}
	return id.RoomID(roomID), nil
}

// rateLimitCreateRoom applies limits.create_room_per_second per user.
func (a *API) rateLimitCreateRoom(next http.Handler) http.Handler {
	return limitBy(a.roomLimiter, func(r *http.Request) string { return authn.FromRequest(r).UserID.String() }, next)
}

func (a *API) createRoom(r *http.Request) (any, error) {
	var req roomserver.CreateRoomRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	zone, err := a.residencyAtCreation(authn.FromRequest(r).UserID, &req)
	if err != nil {
		return nil, err
	}
	remote := a.splitRemoteInvites(&req)
	roomID, err := a.Rooms.CreateRoom(r.Context(), authn.FromRequest(r).UserID, &req)
	if err != nil {
		return nil, roomError(err)
	}
	if zone != nil {
		a.pinCreated(r.Context(), roomID, *zone)
	}
	a.inviteRemotes(r.Context(), authn.FromRequest(r).UserID, roomID, remote, req.IsDirect)
	return map[string]any{"room_id": roomID}, nil
}

type membershipBody struct {
	UserID   string `json:"user_id"`
	Reason   string `json:"reason"`
	IsDirect bool   `json:"is_direct"`
}

func (a *API) joinRoom(r *http.Request) (any, error) {
	// The body's keys go into the member event (roomserver.JoinWithContent).
	body, err := mxhttp.ReadJSONObject(r)
	if err != nil {
		return nil, err
	}
	target := mxhttp.PathParam(r, "roomIDOrAlias")
	if target == "" {
		roomID, err := roomIDParam(r)
		if err != nil {
			return nil, err
		}
		target = string(roomID)
	}
	user := authn.FromRequest(r).UserID
	r = r.WithContext(joinalias.With(r.Context(), target)) // the residency policy classifies by it
	target, servers, err := a.remoteTarget(r, target)
	if err != nil {
		return nil, err
	}
	if rid, ok := a.departedRoom(r.Context(), target); ok {
		// A room no local user is in any more: our copy is stale (remotejoin).
		if err := a.RemoteJoins.Join(r.Context(), user, rid, servers); err != nil {
			return nil, roomError(err)
		}
		return map[string]any{"room_id": rid}, nil
	}
	roomID, err := a.Rooms.JoinWithContent(r.Context(), user, target, body)
	if errors.Is(err, roomserver.ErrNotFound) && a.RemoteJoins != nil && strings.HasPrefix(target, "!") {
		// A room we have no state for: join it through other servers
		// (the alias's servers, server_name and via of /join, then the room
		// ID's domain).
		if err := a.RemoteJoins.Join(r.Context(), user, id.RoomID(target), servers); err != nil {
			return nil, roomError(err)
		}
		return map[string]any{"room_id": target}, nil
	}
	if errors.Is(err, roomserver.ErrUnableToAuthoriseJoin) && a.RemoteJoins != nil {
		rid, _ := a.departedRoomID(r.Context(), target)
		if rid != "" {
			if err := a.RemoteJoins.JoinThroughResident(r.Context(), user, rid, servers); err != nil {
				return nil, roomError(err)
			}
			return map[string]any{"room_id": rid}, nil
		}
	}
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"room_id": roomID}, nil
}

func (a *API) knockRoom(r *http.Request) (any, error) {
	var body membershipBody
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	r = r.WithContext(joinalias.With(r.Context(), mxhttp.PathParam(r, "roomIDOrAlias"))) // the residency policy classifies by it
	target, servers, err := a.remoteTarget(r, mxhttp.PathParam(r, "roomIDOrAlias"))
	if err != nil {
		return nil, err
	}
	roomID, err := a.Rooms.Knock(r.Context(), authn.FromRequest(r).UserID, target, body.Reason)
	if errors.Is(err, roomserver.ErrNotFound) && a.RemoteJoins != nil && strings.HasPrefix(target, "!") {
		// A room we are not in: knock through server_name and via (or the
		// alias's servers), then the room ID's domain.
		if err := a.RemoteJoins.Knock(r.Context(), authn.FromRequest(r).UserID, id.RoomID(target), servers, body.Reason); err != nil {
			return nil, roomError(err)
		}
		return map[string]any{"room_id": target}, nil
	}
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"room_id": roomID}, nil
}

// remoteTarget is the room a /join or /knock names and the servers to try
// if it is hosted elsewhere: server_name and via (at most 50); another
// server's alias is resolved by asking it (the directory), its servers first.
func (a *API) remoteTarget(r *http.Request, target string) (string, []string, error) {
	q := r.URL.Query()
	servers := append(q["server_name"], q["via"]...)
	if len(servers) > 50 {
		return "", nil, mxhttp.InvalidParam("Too many server_name and via parameters")
	}
	if a.RemoteJoins != nil && strings.HasPrefix(target, "#") && !strings.HasSuffix(target, ":"+a.Config.ServerName) {
		info, err := a.Directory.GetAlias(r.Context(), target)
		if err != nil {
			return "", nil, roomError(err)
		}
		return string(info.RoomID), append(info.Servers, servers...), nil
	}
	return target, servers, nil
}

func (a *API) membership(action string) func(r *http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		roomID, err := roomIDParam(r)
		if err != nil {
			return nil, err
		}
		var body membershipBody
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			return nil, err
		}
		if action != "leave" {
			if body.UserID == "" {
				return nil, mxhttp.MissingParam("Missing user_id")
			}
			if !roomserver.ValidUserID(body.UserID) {
				return nil, mxhttp.InvalidParam("Invalid user_id")
			}
		}
		act := roomserver.MembershipAction{
			Sender: authn.FromRequest(r).UserID, RoomID: roomID, Target: id.UserID(body.UserID), Action: action,
			Reason: body.Reason, IsDirect: body.IsDirect,
		}
		if a.isRemoteInvite(act) {
			return mxhttp.EmptyOr(roomError(a.RemoteInvites.Invite(r.Context(), act)))
		}
		if action == "leave" && a.RemoteJoins != nil && a.RemoteJoins.HoldsOutOfBand(r.Context(), act.Sender, roomID) {
			// An invite held out of band of a room whose copy here is stale:
			// a local leave would be authorized against that stale state.
			return mxhttp.EmptyOr(roomError(a.RemoteJoins.Leave(r.Context(), act.Sender, roomID, body.Reason)))
		}
		err = a.Rooms.ChangeMembership(r.Context(), act)
		if action == "leave" && errors.Is(err, roomserver.ErrNotFound) && a.RemoteJoins != nil {
			// A room we are not in: the user's out-of-band invite or knock.
			err = a.RemoteJoins.Leave(r.Context(), authn.FromRequest(r).UserID, roomID, body.Reason)
		}
		return mxhttp.EmptyOr(roomError(err))
	}
}

func (a *API) forgetRoom(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(roomError(a.Rooms.Forget(r.Context(), authn.FromRequest(r).UserID, roomID)))
}

func (a *API) joinedRooms(r *http.Request) (any, error) {
	rooms, err := a.RoomView.JoinedRooms(r.Context(), authn.FromRequest(r).UserID)
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"joined_rooms": rooms}, nil
}

func readContent(r *http.Request) (json.RawMessage, error) {
	obj, err := mxhttp.ReadJSONObject(r)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, mxhttp.BadJSON("Invalid content")
	}
	return raw, nil
}

func (a *API) sendMessage(r *http.Request) (any, error) {
	txnID, err := txnIDParam(r, "txnID")
	if err != nil {
		return nil, err
	}
	return a.sendEvent(r, nil, txnID)
}

// maxTxnIDBytes bounds a transaction ID. It is stored with the sender's
// device (for as long as retries matter) and the spec sets no bound, so
// without one a single request could have the server keep an ID as long as
// an HTTP request line (~1 MB). Clients send a few dozen bytes.
const maxTxnIDBytes = roomserver.MaxFieldBytes

// txnIDParam is the path parameter name as a transaction ID.
func txnIDParam(r *http.Request, name string) (string, error) {
	txnID := mxhttp.PathParam(r, name)
	if len(txnID) > maxTxnIDBytes {
		return "", mxhttp.InvalidParam("Transaction ID exceeds %d bytes", maxTxnIDBytes)
	}
	return txnID, nil
}

// stateKeyParam is the state key: the rest of the path after /state/{eventType}/.
func stateKeyParam(r *http.Request) string { return mxhttp.PathParam(r, "*") }

func (a *API) putState(r *http.Request) (any, error) {
	stateKey := stateKeyParam(r)
	return a.sendEvent(r, &stateKey, "")
}

// sendEvent sends an event of the path's {eventType} to its {roomID}, with
// the request body as content: a state event when stateKey is set.
func (a *API) sendEvent(r *http.Request, stateKey *string, txnID string) (any, error) {
	roomID, evType, err := roomAndTypeParams(r)
	if err != nil {
		return nil, err
	}
	if stateKey != nil && len(*stateKey) > roomserver.MaxFieldBytes {
		return nil, mxhttp.InvalidParam("State key too long")
	}
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	if stateKey != nil {
		if err := a.checkResidencyState(r.Context(), roomID, evType, content); err != nil {
			return nil, err
		}
	}
	d := authn.FromRequest(r)
	evID, err := a.Rooms.Send(r.Context(), roomserver.SendRequest{
		Sender: d.UserID, DeviceID: d.DeviceID, RoomID: roomID, Type: evType, StateKey: stateKey, Content: content, TxnID: txnID,
	})
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"event_id": evID}, nil
}

// roomAndTypeParams returns the {roomID} and {eventType} path parameters, validated.
func roomAndTypeParams(r *http.Request) (id.RoomID, string, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return "", "", err
	}
	evType := mxhttp.PathParam(r, "eventType")
	if !roomserver.ValidEventType(evType) {
		return "", "", mxhttp.InvalidParam("Invalid event type")
	}
	return roomID, evType, nil
}

func (a *API) getState(r *http.Request) (any, error) {
	roomID, evType, err := roomAndTypeParams(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.RoomView.StateEvent(readCtx(r), authn.FromRequest(r).UserID, roomID, evType, stateKeyParam(r))
	if err != nil {
		return nil, roomError(err)
	}
	if r.URL.Query().Get("format") == "event" {
		return ev, nil
	}
	return json.RawMessage(gjson.GetBytes(ev, "content").Raw), nil
}

func (a *API) roomState(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return roomResult(a.RoomView.State(readCtx(r), authn.FromRequest(r).UserID, roomID))
}

func (a *API) redactEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	txnID, err := txnIDParam(r, "txnID")
	if err != nil {
		return nil, err
	}
	d := authn.FromRequest(r)
	evID, err := a.Rooms.Redact(r.Context(), d.UserID, d.DeviceID, roomID, id.EventID(mxhttp.PathParam(r, "eventID")), body.Reason, txnID)
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"event_id": evID}, nil
}

func (a *API) getEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	return roomResult(a.RoomView.Event(readCtx(r), authn.FromRequest(r).UserID, roomID, id.EventID(mxhttp.PathParam(r, "eventID"))))
}

func (a *API) roomMembers(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	for _, k := range []string{"membership", "not_membership"} {
		switch q.Get(k) {
		case "", "join", "invite", "knock", "leave", "ban":
		default:
			return nil, mxhttp.InvalidParam("Invalid %s", k)
		}
	}
	evs, err := a.RoomView.Members(readCtx(r), authn.FromRequest(r).UserID, roomID, roomview.MembersQuery{
		At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership"),
	})
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"chunk": evs}, nil
}

func (a *API) joinedMembers(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	m, err := a.RoomView.JoinedMembers(r.Context(), authn.FromRequest(r).UserID, roomID)
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"joined": m}, nil
}

func intParam(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, mxhttp.InvalidParam("Invalid %s", name)
	}
	return n, nil
}

func (a *API) roomMessages(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	limit, err := intParam(r, "limit", 10)
	if err != nil {
		return nil, err
	}
	filter, err := parseEventFilter(q.Get("filter"))
	if err != nil {
		return nil, err
	}
	if filter != nil && filter.Limit > 0 && q.Get("limit") == "" {
		limit = filter.Limit
	}
	return roomResult(a.RoomView.Messages(readCtx(r), authn.FromRequest(r).UserID, roomID, roomview.MessagesRequest{
		From: q.Get("from"), To: q.Get("to"), Dir: q.Get("dir"), Limit: limit, Filter: filter,
	}))
}

func (a *API) eventContext(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	limit, err := intParam(r, "limit", 10)
	if err != nil {
		return nil, err
	}
	filter, err := parseEventFilter(r.URL.Query().Get("filter"))
	if err != nil {
		return nil, err
	}
	return roomResult(a.RoomView.Context(readCtx(r), authn.FromRequest(r).UserID, roomID, id.EventID(mxhttp.PathParam(r, "eventID")), limit, filter))
}

// parseEventFilter checks a RoomEventFilter with the validator POST /filter
// applies (accounts.ParseEventFilter) and parses it for the room reads.
func parseEventFilter(raw string) (*roomview.EventFilter, error) {
	if _, err := accounts.ParseEventFilter(raw); err != nil {
		return nil, err
	}
	return roomResult(roomview.ParseFilter(raw))
}
