package federationapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/residency"
)

// Residency is the data-localization policy as the handlers ask it
// (residency.Policy, through homeserver): whether the requesting server may
// have a room's data of a kind, join it, or have a kind of data at all.
type Residency interface {
	Server(ctx context.Context, server string, kind residency.Kind) residency.Decision
	Room(ctx context.Context, roomID, server string, kind residency.Kind) residency.Decision
	Join(ctx context.Context, roomID, server string) residency.Decision
	// Invited decides whether server may invite one of our users to
	// roomID: the room's zone is its recorded one or, for a room we hold
	// nothing of, the rules' classification of the invite's stripped state;
	// the inviting server must be admitted to that zone.
	Invited(ctx context.Context, roomID, server string, strippedState []json.RawMessage) residency.Decision
}

// Audit is the audit trail (audit.Log): a refusal record per request the
// policy refused, a flow record per query answered.
type Audit interface {
	Refusal(actor string, r audit.Refusal)
	Flow(actor string, f audit.Flow)
}

// endpoint names a request's endpoint for the audit trail from its route:
// "/_matrix/federation/v1/state/{roomId}" is "state",
// "/_matrix/federation/v1/user/keys/query" is "user/keys/query".
func endpoint(r *http.Request) string {
	rc := chi.RouteContext(r.Context())
	if rc == nil {
		return "federation"
	}
	pattern := rc.RoutePattern()
	for _, v := range []string{"/v1/", "/v2/"} {
		if i := strings.LastIndex(pattern, v); i >= 0 {
			pattern = pattern[i+len(v):]
			break
		}
	}
	if i := strings.Index(pattern, "/{"); i >= 0 {
		pattern = pattern[:i]
	}
	if pattern == "" {
		return "federation"
	}
	return pattern
}

// refuse turns a refusing decision into 403 M_FORBIDDEN with its reason
// and records it (inbound: a request we refused); nil when allowed.
func (a *API) refuse(r *http.Request, d residency.Decision, origin string, kind residency.Kind, roomID string) error {
	if d.Allowed {
		return nil
	}
	if a.audit != nil {
		a.audit.Refusal(a.serverName, audit.ResidencyRefusal(d, audit.Inbound, origin, endpoint(r), kind, roomID))
	}
	reason := d.Reason
	if reason == "" {
		reason = "Refused by this server's data-localization policy (" + d.Rule + ")"
	}
	return mxhttp.Forbidden("%s", reason)
}

// admitRoom asks whether origin may have kind of roomID's data.
func (a *API) admitRoom(r *http.Request, roomID, origin string, kind residency.Kind) error {
	if a.residency == nil {
		return nil
	}
	return a.refuse(r, a.residency.Room(r.Context(), roomID, origin, kind), origin, kind, roomID)
}

// admitJoin asks whether origin may join roomID (or knock on it).
func (a *API) admitJoin(r *http.Request, roomID, origin string) error {
	if a.residency == nil {
		return nil
	}
	return a.refuse(r, a.residency.Join(r.Context(), roomID, origin), origin, residency.Events, roomID)
}

// admitServer asks whether origin may have kind of data at all.
func (a *API) admitServer(r *http.Request, origin string, kind residency.Kind) error {
	if a.residency == nil {
		return nil
	}
	return a.refuse(r, a.residency.Server(r.Context(), origin, kind), origin, kind, "")
}

// roomAdmits reports, without a record, whether origin may see roomID in a
// listing (public rooms, a hierarchy's children): what is left out of a
// listing is not a refusal of the request.
func (a *API) roomAdmits(ctx context.Context, roomID, origin string, kind residency.Kind) bool {
	return a.residency == nil || a.residency.Room(ctx, roomID, origin, kind).Allowed
}

// served records a query answered to origin: items of kind, and for room
// reads the room they came from. It queues (audit.Log.Flow does not wait).
func (a *API) served(r *http.Request, origin string, kind residency.Kind, roomID string, items int) {
	if a.audit == nil {
		return
	}
	f := audit.Flow{Direction: audit.Outbound, Server: origin, Endpoint: endpoint(r), Data: map[string]int{string(kind): items}}
	if kind == residency.Events {
		f.PDUs = items
	}
	if roomID != "" {
		f.Rooms = map[string]int{roomID: items}
	}
	a.audit.Flow(a.serverName, f)
}
