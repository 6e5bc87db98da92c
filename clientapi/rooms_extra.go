package clientapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomview"
)

// RoomsExtras is what the remaining room read endpoints need (roomview).
type RoomsExtras interface {
	Relations(ctx context.Context, user id.UserID, roomID id.RoomID, req roomview.RelationsRequest) (*roomview.RelationsResponse, error)
	Threads(ctx context.Context, user id.UserID, roomID id.RoomID, include, from string, limit int) (*roomview.ThreadsResponse, error)
	TimestampToEvent(ctx context.Context, user id.UserID, roomID id.RoomID, ts int64, forwards bool) (id.EventID, int64, error)
	Summary(ctx context.Context, user id.UserID, roomIDOrAlias string) (*roomview.RoomSummary, error)
	Hierarchy(ctx context.Context, user id.UserID, roomID id.RoomID, suggestedOnly bool, maxDepth, limit int, from string) (*roomview.HierarchyResponse, error)
	Report(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID, reason string, score *int64) error
}

func (a *API) roomExtraRoutes(r chi.Router) {
	r.Method(http.MethodPost, "/rooms/{roomID}/upgrade", mxhttp.JSON(a.upgradeRoom))
	r.Method(http.MethodPost, "/rooms/{roomID}/report/{eventID}", mxhttp.JSON(a.report))
	r.Method(http.MethodPost, "/rooms/{roomID}/report", mxhttp.JSON(a.report))
	r.Method(http.MethodGet, "/user/{userID}/rooms/{roomID}/tags", mxhttp.JSON(a.getTags))
	r.Method(http.MethodPut, "/user/{userID}/rooms/{roomID}/tags/{tag}", mxhttp.JSON(a.putTag))
	r.Method(http.MethodDelete, "/user/{userID}/rooms/{roomID}/tags/{tag}", mxhttp.JSON(a.deleteTag))
}

func (a *API) roomExtraRoutesV1(r chi.Router) {
	r.Method(http.MethodGet, "/rooms/{roomID}/relations/{eventID}", mxhttp.JSON(a.relations))
	r.Method(http.MethodGet, "/rooms/{roomID}/relations/{eventID}/{relType}", mxhttp.JSON(a.relations))
	r.Method(http.MethodGet, "/rooms/{roomID}/relations/{eventID}/{relType}/{eventType}", mxhttp.JSON(a.relations))
	r.Method(http.MethodGet, "/rooms/{roomID}/threads", mxhttp.JSON(a.threads))
	r.Method(http.MethodGet, "/rooms/{roomID}/hierarchy", mxhttp.JSON(a.hierarchy))
	r.Method(http.MethodGet, "/rooms/{roomID}/timestamp_to_event", mxhttp.JSON(a.timestampToEvent))
}

// RoomSummaryUnstable serves MSC3266's unstable paths; the router mounts it
// under /_matrix/client/unstable/im.nheko.summary (authenticated).
func (a *API) RoomSummaryUnstable(r chi.Router) {
	r.Method(http.MethodGet, "/rooms/{roomIDOrAlias}/summary", mxhttp.JSON(a.roomSummary))
	r.Method(http.MethodGet, "/summary/{roomIDOrAlias}", mxhttp.JSON(a.roomSummary))
}

func (a *API) upgradeRoom(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		NewVersion         string   `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.NewVersion == "" {
		return nil, mxhttp.BadJSON("Missing new_version")
	}
	newRoom, err := a.Rooms.UpgradeWithCreators(r.Context(), authn.FromRequest(r).UserID, roomID, body.NewVersion, body.AdditionalCreators)
	if err != nil {
		return nil, roomError(err)
	}
	a.pinUpgraded(r.Context(), roomID, newRoom)
	return map[string]any{"replacement_room": newRoom}, nil
}

func (a *API) report(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Reason string `json:"reason"`
		Score  *int64 `json:"score"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(roomError(a.RoomView.Report(r.Context(), authn.FromRequest(r).UserID, roomID, id.EventID(mxhttp.PathParam(r, "eventID")), body.Reason, body.Score)))
}

// ownRoomParams checks that {userID} is the caller.
func ownRoomParams(r *http.Request) (id.UserID, id.RoomID, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return "", "", err
	}
	u := id.UserID(mxhttp.PathParam(r, "userID"))
	if u != authn.FromRequest(r).UserID {
		return "", "", mxhttp.Forbidden("Cannot access other users' tags")
	}
	return u, roomID, nil
}

func (a *API) getTags(r *http.Request) (any, error) {
	u, roomID, err := ownRoomParams(r)
	if err != nil {
		return nil, err
	}
	return a.Accounts.Tags(r.Context(), u, roomID)
}

func (a *API) putTag(r *http.Request) (any, error) {
	u, roomID, err := ownRoomParams(r)
	if err != nil {
		return nil, err
	}
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(a.Accounts.SetTag(r.Context(), u, roomID, mxhttp.PathParam(r, "tag"), content))
}

func (a *API) deleteTag(r *http.Request) (any, error) {
	u, roomID, err := ownRoomParams(r)
	if err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(a.Accounts.SetTag(r.Context(), u, roomID, mxhttp.PathParam(r, "tag"), nil))
}

func (a *API) relations(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	limit, err := intParam(r, "limit", 50)
	if err != nil {
		return nil, err
	}
	dir := q.Get("dir")
	if dir != "" && dir != "b" && dir != "f" {
		return nil, mxhttp.InvalidParam("dir must be b or f")
	}
	var recurse *bool
	if q.Has("recurse") {
		v := q.Get("recurse")
		if v != "true" && v != "false" {
			return nil, mxhttp.InvalidParam("recurse must be true or false")
		}
		b := v == "true"
		recurse = &b
	}
	return roomResult(a.RoomView.Relations(readCtx(r), authn.FromRequest(r).UserID, roomID, roomview.RelationsRequest{
		EventID: id.EventID(mxhttp.PathParam(r, "eventID")), RelType: mxhttp.PathParam(r, "relType"), EventType: mxhttp.PathParam(r, "eventType"),
		From: q.Get("from"), To: q.Get("to"), Backward: dir != "f", Limit: limit, Recurse: recurse,
	}))
}

func (a *API) threads(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	limit, err := intParam(r, "limit", 50)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	return roomResult(a.RoomView.Threads(readCtx(r), authn.FromRequest(r).UserID, roomID, q.Get("include"), q.Get("from"), limit))
}

func (a *API) hierarchy(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	limit, err := intParam(r, "limit", 50)
	if err != nil {
		return nil, err
	}
	maxDepth, err := intParam(r, "max_depth", 0)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	suggested := q.Get("suggested_only") == "true"
	return roomResult(a.RoomView.Hierarchy(r.Context(), authn.FromRequest(r).UserID, roomID, suggested, maxDepth, limit, q.Get("from")))
}

func (a *API) timestampToEvent(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return nil, mxhttp.InvalidParam("ts must be a timestamp in milliseconds")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return nil, mxhttp.InvalidParam("dir must be f or b")
	}
	evID, evTS, err := a.RoomView.TimestampToEvent(r.Context(), authn.FromRequest(r).UserID, roomID, ts, dir == "f")
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"event_id": evID, "origin_server_ts": evTS}, nil
}

// roomSummary: GET /v1/room_summary/{roomIdOrAlias}. Authentication is
// optional: an anonymous caller sees only the rooms room_summary.yaml lets
// servers show without it (public, knock or knock_restricted join rules, or
// world_readable history).
func (a *API) roomSummary(r *http.Request) (any, error) {
	var user id.UserID
	if d := authn.FromRequest(r); d != nil {
		user = d.UserID
	}
	return roomResult(a.RoomView.Summary(r.Context(), user, mxhttp.PathParam(r, "roomIDOrAlias")))
}
