// Package federationapi holds the server-server API's room handlers: thin
// handlers over the modules (roomserver's room-state reads, the directory),
// mounted by the federation transport under /_matrix/federation behind its
// X-Matrix authentication (federation.Origin is the requesting server). Each
// handler decides who may read what (the requesting server in the room, the
// room's m.room.server_acl, history visibility for servers); the modules
// answer what the room holds. The transport itself stays in federation.
package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/directory"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/redact"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomview"
	"github.com/myelin-chat/myelin/storage"
)

// Rooms is what the handlers read of rooms (the roomserver's room-state reads).
type Rooms interface {
	Event(ctx context.Context, eventID string) (*storage.Event, error)
	RoomEvent(ctx context.Context, roomID id.RoomID, eventID string) (*storage.Event, error)
	Events(ctx context.Context, ids []string) ([]*storage.Event, error)
	ServerInRoom(ctx context.Context, roomID id.RoomID, server string) (bool, error)
	StateIDsAt(ctx context.Context, roomID id.RoomID, eventID string) ([]string, error)
	AuthChain(ctx context.Context, ids []string) ([]*storage.Event, error)
	WalkBack(ctx context.Context, roomID id.RoomID, from, stop []string, includeFrom bool, minDepth int64, limit int,
		keep func(*storage.Event) (bool, error)) ([]*storage.Event, error)
	VisibilityFor(server string, inRoom bool) *roomserver.ServerVisibility
}

// Store is what the handlers look up directly: the room row, the room's
// current server ACL, its joined servers and timestamp lookups (*storage.DB).
type Store interface {
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
	// ErasedUsers: the senders whose events are served redacted (servedPDUs).
	ErasedUsers(ctx context.Context, userIDs []string) (map[string]bool, error)
	CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error)
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	EventNearTimestamp(ctx context.Context, roomID string, ts int64, forwards bool) (*storage.Event, error)
}

// Directory resolves local aliases and lists published rooms (directory).
type Directory interface {
	GetAlias(ctx context.Context, alias string) (*directory.AliasInfo, error)
	PublicRooms(ctx context.Context, req directory.PublicRoomsRequest) (*directory.PublicRoomsResponse, error)
}

// Spaces answers the federation space hierarchy (roomview).
type Spaces interface {
	ServerHierarchy(ctx context.Context, server string, roomID id.RoomID, suggestedOnly bool) (*roomview.ServerHierarchyResponse, error)
}

// Transactions processes the PDUs and EDUs of an inbound /send
// transaction (ingest): per-PDU results keyed by event ID, "" when accepted.
type Transactions interface {
	Transaction(ctx context.Context, origin, txnID string, body []byte) (map[string]string, error)
}

// Options are what the API is built from.
type Options struct {
	ServerName   string
	Rooms        Rooms
	Store        Store
	Directory    Directory
	Spaces       Spaces
	Transactions Transactions // nil: PUT /send is not served
	Joins        Joins        // the writer's remote-join operations (roomserver)
	Memberships  Memberships  // the writer's remote leaves and knocks (roomserver); nil: not served
	Invites      Invites      // invites of local users (roomserver); nil: /invite is not served
	UserKeys     UserKeys     // our users' devices and keys (keyserver); nil: /user/* is not served
	// Residency is the data-localization policy (residency.go); nil: not asked.
	Residency Residency
	// Audit records the policy's refusals and the queries answered; nil: nothing recorded.
	Audit Audit
}

// API is the server-server room API.
type API struct {
	serverName  string
	rooms       Rooms
	store       Store
	directory   Directory
	spaces      Spaces
	txns        Transactions
	joins       Joins
	memberships Memberships
	invites     Invites
	userKeys    UserKeys
	residency   Residency
	audit       Audit
	heavy       *originSlots // costly reads running per origin
}

// New builds the API.
func New(o Options) *API {
	return &API{serverName: o.ServerName, rooms: o.Rooms, store: o.Store, directory: o.Directory, spaces: o.Spaces,
		txns: o.Transactions, joins: o.Joins, memberships: o.Memberships, invites: o.Invites, userKeys: o.UserKeys,
		residency: o.Residency, audit: o.Audit, heavy: newOriginSlots(MaxHeavyPerOrigin)}
}

// Bounds on what one request may ask for.
const (
	maxBackfillLimit      = 100 // /backfill's limit is capped to this
	maxBackfillFrom       = 20  // v parameters of one /backfill
	defaultMissingLimit   = 10
	maxMissingLimit       = 100 // /get_missing_events' limit is capped to this
	maxMissingEventLists  = 200 // earliest_events, latest_events entries
	maxPublicRoomsLimit   = 500
	defaultPublicRoomsCap = 100
)

// Mount adds the routes to r, a router already under /_matrix/federation
// and behind X-Matrix authentication.
func (a *API) Mount(r chi.Router) {
	r.Get("/v1/event/{eventId}", mxhttp.JSON(a.event).ServeHTTP)
	r.Get("/v1/timestamp_to_event/{roomId}", mxhttp.JSON(a.timestampToEvent).ServeHTTP)
	r.Get("/v1/query/directory", mxhttp.JSON(a.queryDirectory).ServeHTTP)
	r.Get("/v1/publicRooms", mxhttp.JSON(a.publicRooms).ServeHTTP)
	r.Post("/v1/publicRooms", mxhttp.JSON(a.publicRooms).ServeHTTP)
	r.Get("/v1/make_join/{roomId}/{userId}", mxhttp.JSON(a.makeJoin).ServeHTTP)
	// The costly reads: at most MaxHeavyPerOrigin at once per server.
	r.Group(func(r chi.Router) {
		r.Use(a.heavy.bounded)
		r.Get("/v1/state/{roomId}", mxhttp.JSON(a.state).ServeHTTP)
		r.Get("/v1/state_ids/{roomId}", mxhttp.JSON(a.stateIDs).ServeHTTP)
		r.Get("/v1/event_auth/{roomId}/{eventId}", mxhttp.JSON(a.eventAuth).ServeHTTP)
		r.Get("/v1/backfill/{roomId}", mxhttp.JSON(a.backfill).ServeHTTP)
		r.Post("/v1/get_missing_events/{roomId}", mxhttp.JSON(a.missingEvents).ServeHTTP)
		r.Get("/v1/hierarchy/{roomId}", mxhttp.JSON(a.hierarchy).ServeHTTP)
		r.Put("/v2/send_join/{roomId}/{eventId}", mxhttp.JSON(a.sendJoin).ServeHTTP)
		r.Put("/v1/send_join/{roomId}/{eventId}", mxhttp.JSON(a.sendJoinV1).ServeHTTP)
	})
	a.mountMemberships(r) // make_leave, send_leave, make_knock, send_knock
	a.mountUserKeys(r)    // userkeys.go: /user/devices, /user/keys/query, /user/keys/claim
	if a.txns != nil {
		r.Put("/v1/send/{txnId}", mxhttp.JSON(a.send).ServeHTTP)
	}
	if a.invites != nil { // invite.go: invites of our users (out-of-band memberships)
		r.Put("/v1/invite/{roomId}/{eventId}", mxhttp.JSON(a.inviteV1).ServeHTTP)
		r.Put("/v2/invite/{roomId}/{eventId}", mxhttp.JSON(a.inviteV2).ServeHTTP)
	}
}

// roomAnswer maps the room modules' kinds of failure to the federation
// answers; other errors pass through (Matrix errors as they are, internal
// ones as 500).
func roomAnswer(err error) error {
	if err == nil {
		return nil
	}
	var rErr *roomserver.Error
	if !errors.As(err, &rErr) {
		return err
	}
	switch {
	case errors.Is(rErr.Kind, roomserver.ErrNotFound):
		return mxhttp.NotFound("%s", rErr.Message)
	case errors.Is(rErr.Kind, roomserver.ErrForbidden):
		return mxhttp.Forbidden("%s", rErr.Message)
	case errors.Is(rErr.Kind, roomserver.ErrInvalidParam):
		return mxhttp.InvalidParam("%s", rErr.Message)
	case errors.Is(rErr.Kind, roomserver.ErrBadJSON):
		return mxhttp.BadJSON("%s", rErr.Message)
	case errors.Is(rErr.Kind, roomserver.ErrTooLarge):
		return mxhttp.TooLarge("%s", rErr.Message)
	}
	return err
}

// ---- who may read a room ----

func roomIDParam(r *http.Request) (id.RoomID, error) {
	raw := mxhttp.PathParam(r, "roomId")
	if !roomserver.ValidRoomID(raw) {
		return "", mxhttp.InvalidParam("Invalid room ID")
	}
	return id.RoomID(raw), nil
}

func eventIDParam(raw string) (string, error) {
	if raw == "" {
		return "", mxhttp.MissingParam("event_id is required")
	}
	if !roomserver.ValidEventID(raw) {
		return "", mxhttp.InvalidParam("Invalid event ID")
	}
	return raw, nil
}

// knownRoom answers 404 M_NOT_FOUND for a room the server has no state for.
func (a *API) knownRoom(ctx context.Context, roomID id.RoomID) error {
	_, err := roomserver.RoomVersion(ctx, a.store, roomID)
	return roomAnswer(err)
}

// checkACL refuses an origin the room's current m.room.server_acl denies
// (403 M_FORBIDDEN).
func (a *API) checkACL(ctx context.Context, roomID id.RoomID, origin string) error {
	ev, err := a.store.CurrentStateEvent(ctx, string(roomID), "m.room.server_acl", "")
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !ACLAllows(ev.JSON, origin) {
		return mxhttp.Forbidden("Server %s is banned from this room by its server ACL", origin)
	}
	return nil
}

// ACLAllows applies an m.room.server_acl PDU (its content) to a server
// (spec: client-server API, "Server Access Control Lists"): the port is
// ignored; an IP literal host is refused unless allow_ip_literals; a deny
// match refuses, an allow match admits, anything else is refused.
func ACLAllows(pduJSON []byte, server string) bool {
	content := gjson.GetBytes(pduJSON, "content")
	host := federation.PolicyHost(server)
	strs := func(key string) []string {
		var out []string
		list := content.Get(key)
		if !list.IsArray() {
			return nil // not a list: nothing matches
		}
		list.ForEach(func(_, v gjson.Result) bool {
			if v.Type == gjson.String {
				out = append(out, v.Str)
			}
			return true
		})
		return out
	}
	if content.Get("allow_ip_literals").Type == gjson.False && isIPLiteral(host) {
		return false
	}
	if federation.MatchesAny(strs("deny"), host) {
		return false
	}
	return federation.MatchesAny(strs("allow"), host)
}

func isIPLiteral(host string) bool {
	if strings.HasPrefix(host, "[") {
		return true
	}
	parts := strings.Split(host, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// member answers whether origin may read roomID's DAG: the room is known,
// the residency policy admits origin to its events, its server ACL admits
// origin and origin has a joined member in the room's current state (what
// Synapse checks for /state and /backfill; the spec says "the requesting
// host is not in the room"). 404 / 403 otherwise.
func (a *API) member(r *http.Request, roomID id.RoomID, origin string) error {
	ctx := r.Context()
	if err := a.knownRoom(ctx, roomID); err != nil {
		return err
	}
	if err := a.admitRoom(r, string(roomID), origin, residency.Events); err != nil {
		return err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return err
	}
	in, err := a.rooms.ServerInRoom(ctx, roomID, origin)
	if err != nil {
		return err
	}
	if !in {
		return mxhttp.Forbidden("Server %s is not in room %s", origin, roomID)
	}
	return nil
}

// visibleEvent loads eventID of roomID for a member server and refuses it
// (403) when the server may not see it.
func (a *API) visibleEvent(ctx context.Context, roomID id.RoomID, eventID, origin string) (*storage.Event, error) {
	ev, err := a.rooms.RoomEvent(ctx, roomID, eventID)
	if err != nil {
		return nil, roomAnswer(err)
	}
	ok, err := a.rooms.VisibilityFor(origin, true).CanSee(ctx, ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxhttp.Forbidden("Server %s may not see event %s", origin, eventID)
	}
	return ev, nil
}

func pdus(evs []*storage.Event) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = e.JSON
	}
	return out
}

func eventIDs(evs []*storage.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.EventID
	}
	return out
}

// transaction is the single- and multi-PDU transaction of /event and /backfill.
type transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
}

func (a *API) transaction(ctx context.Context, evs []*storage.Event) (*transaction, error) {
	out, err := a.servedPDUs(ctx, evs)
	if err != nil {
		return nil, err
	}
	return &transaction{Origin: a.serverName, OriginServerTS: time.Now().UnixMilli(), PDUs: out}, nil
}

// servedPDUs are the PDUs of evs (all of one room) as served to another
// server for its history (/event, /backfill, /get_missing_events): the
// events of users who erased their account go through the redaction
// algorithm, signatures and hashes kept (messages and memberships only,
// clientevent.Erasable: room state stays whole). A server whose users were in the
// room when such an event was sent received it then, in the transaction
// that carried it; one asking for it now is a later reader, like a user
// joining later (clientevent), and gets no more than they would. The
// redacted copy still verifies and carries the DAG (its content hash no
// longer matches, which the receiver treats as a redaction). State served
// for joins (/state, send_join) is left whole: the auth rules read it.
func (a *API) servedPDUs(ctx context.Context, evs []*storage.Event) ([]json.RawMessage, error) {
	out := pdus(evs)
	senders := make([]string, len(evs))
	for i, e := range evs {
		senders[i] = e.Sender
	}
	erased, err := a.store.ErasedUsers(ctx, senders)
	if err != nil || len(erased) == 0 {
		return out, err
	}
	versions := map[string]id.RoomVersion{}
	for i, e := range evs {
		if !erased[e.Sender] || !clientevent.Erasable(e) {
			continue
		}
		v, ok := versions[e.RoomID]
		if !ok {
			row, err := a.store.GetRoom(ctx, e.RoomID)
			if err != nil {
				return nil, roomAnswer(err)
			}
			v = id.RoomVersion(row.RoomVersion)
			versions[e.RoomID] = v
		}
		if out[i], err = redact.PDU(v, e.JSON); err != nil {
			return nil, fmt.Errorf("redacting %s of an erased user: %w", e.EventID, err)
		}
	}
	return out, nil
}
