package homeserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/backfill"
	"github.com/myelin-chat/myelin/directory"
	"github.com/myelin-chat/myelin/federationapi"
	"github.com/myelin-chat/myelin/federationsender"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/keyserver"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/roomview"
	"github.com/myelin-chat/myelin/storage"
)

// The residency policy on what this server sends or asks of other servers
// (docs/architecture.md, "Outbound enforcement"): the federation sender and
// the EDU queue ask it per room and data kind (Options.Residency), remote
// joins, knocks and invites through residencyJoins, and the outbound
// queries through the wrappers below, which refuse before any request: 403
// M_FORBIDDEN with the policy's reason (errResidency), an audit record.

// outboundGate asks the residency policy about one outbound request and
// records its refusals.
type outboundGate struct {
	p     *residency.Policy
	audit *audit.Log
	us    string
}

func (s *Server) outboundGate() outboundGate {
	return outboundGate{p: s.Residency, audit: s.Audit, us: s.Config.ServerName}
}

// on: the policy is on (it cannot be turned on without a restart).
func (g outboundGate) on() bool { return g.p != nil && g.p.Enabled() }

// refused records d and returns it as the client's 403.
func (g outboundGate) refused(d residency.Decision, server, purpose string, kind residency.Kind, roomID string) error {
	if g.audit != nil {
		g.audit.Refusal(g.us, audit.ResidencyRefusal(d, audit.Outbound, server, purpose, kind, roomID))
	}
	return errResidency(d)
}

// errResidency is a refusal as the client sees it.
func errResidency(d residency.Decision) error {
	return &mxhttp.Error{Status: http.StatusForbidden, Code: "M_FORBIDDEN", Message: d.Reason}
}

// server decides whether kind may be asked of server.
func (g outboundGate) server(ctx context.Context, server string, kind residency.Kind, purpose string) error {
	if !g.on() {
		return nil
	}
	if d := g.p.Server(ctx, server, kind); !d.Allowed {
		return g.refused(d, server, purpose, kind, "")
	}
	return nil
}

// room decides whether server may be asked about roomID: a room known here
// by its zone (a question names the room to the server), one unknown by
// the server's zone alone.
func (g outboundGate) room(ctx context.Context, roomID, server string, kind residency.Kind, purpose string) error {
	if !g.on() {
		return nil
	}
	c, err := g.p.RoomZone(ctx, roomID)
	var d residency.Decision
	switch {
	case err == nil:
		d = g.p.Rules().Admits(c.Zone, server, kind)
	case errors.Is(err, residency.ErrUnknownRoom):
		d = g.p.Server(ctx, server, kind)
	default:
		d = residency.Decision{Rule: "residency.unknown_room", Reason: "this server cannot tell which zone the room is resident in"}
	}
	if !d.Allowed {
		return g.refused(d, server, purpose, kind, roomID)
	}
	return nil
}

// residentProfiles: profile queries (Profile).
type residentProfiles struct {
	accounts.RemoteProfiles
	g outboundGate
}

func (r residentProfiles) QueryProfile(ctx context.Context, userID id.UserID) (map[string]json.RawMessage, error) {
	if err := r.g.server(ctx, userID.Homeserver(), residency.Profile, "profile"); err != nil {
		return nil, err
	}
	return r.RemoteProfiles.QueryProfile(ctx, userID)
}

// residentDirectory: alias lookups and public room directories (Directory).
type residentDirectory struct {
	directory.Remote
	g outboundGate
}

func (r residentDirectory) QueryDirectory(ctx context.Context, server, alias string) (*directory.AliasInfo, error) {
	if err := r.g.server(ctx, server, residency.Directory, "directory"); err != nil {
		return nil, err
	}
	return r.Remote.QueryDirectory(ctx, server, alias)
}

func (r residentDirectory) PublicRooms(ctx context.Context, server string, req directory.PublicRoomsRequest) (*directory.PublicRoomsResponse, error) {
	if err := r.g.server(ctx, server, residency.Directory, "directory"); err != nil {
		return nil, err
	}
	return r.Remote.PublicRooms(ctx, server, req)
}

// residentSpaces: a space hierarchy is asked only of the via servers the
// room's zone admits (Directory); none left is the refusal.
type residentSpaces struct {
	roomview.RemoteSpaces
	g outboundGate
}

func (r residentSpaces) RemoteHierarchy(ctx context.Context, servers []string, roomID id.RoomID, suggestedOnly bool) (*roomview.ServerHierarchyResponse, error) {
	if !r.g.on() {
		return r.RemoteSpaces.RemoteHierarchy(ctx, servers, roomID, suggestedOnly)
	}
	var kept []string
	var first error
	for _, srv := range servers {
		if len(kept) >= maxHierarchyServers*2 {
			break
		}
		if err := r.g.room(ctx, string(roomID), srv, residency.Directory, "hierarchy"); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		kept = append(kept, srv)
	}
	if len(kept) == 0 && first != nil {
		return nil, first
	}
	return r.RemoteSpaces.RemoteHierarchy(ctx, kept, roomID, suggestedOnly)
}

// residentBackfill: a room's history is asked only of a server its zone
// admits (Events); a refusal is that server failing, and the next is asked.
type residentBackfill struct {
	c interface {
		backfill.Client
		backfill.TimestampClient
	}
	g outboundGate
}

func (r residentBackfill) Backfill(ctx context.Context, server string, roomID id.RoomID, from []id.EventID, limit int) ([]json.RawMessage, error) {
	if err := r.g.room(ctx, string(roomID), server, residency.Events, "backfill"); err != nil {
		return nil, err
	}
	return r.c.Backfill(ctx, server, roomID, from, limit)
}

func (r residentBackfill) EventAuth(ctx context.Context, server string, roomID id.RoomID, eventID id.EventID) ([]json.RawMessage, error) {
	if err := r.g.room(ctx, string(roomID), server, residency.Events, "event_auth"); err != nil {
		return nil, err
	}
	return r.c.EventAuth(ctx, server, roomID, eventID)
}

func (r residentBackfill) TimestampToEvent(ctx context.Context, server string, roomID id.RoomID, ts int64, forwards bool) (id.EventID, int64, error) {
	if err := r.g.room(ctx, string(roomID), server, residency.Events, "timestamp_to_event"); err != nil {
		return "", 0, err
	}
	return r.c.TimestampToEvent(ctx, server, roomID, ts, forwards)
}

// residentKeys: end-to-end key queries and claims (Keys), device lists
// (DeviceKeys). A refusal is the server failing: keys/query and keys/claim
// list it in their failures.
type residentKeys struct {
	keyserver.Federation
	g outboundGate
}

func (r residentKeys) QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*keyserver.QueryResponse, error) {
	if err := r.g.server(ctx, server, residency.Keys, "keys_query"); err != nil {
		return nil, err
	}
	return r.Federation.QueryKeys(ctx, server, deviceKeys)
}

func (r residentKeys) ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	if err := r.g.server(ctx, server, residency.Keys, "keys_claim"); err != nil {
		return nil, err
	}
	return r.Federation.ClaimKeys(ctx, server, oneTimeKeys)
}

func (r residentKeys) UserDevices(ctx context.Context, server, userID string) (*keyserver.UserDevicesResponse, error) {
	if err := r.g.server(ctx, server, residency.DeviceKeys, "user_devices"); err != nil {
		return nil, err
	}
	return r.Federation.UserDevices(ctx, server, userID)
}

// residencyJoins is the policy as remotejoin asks it (remotejoin.Residency).
// acl, when set, reads a room's m.room.server_acl for Join (invites).
type residencyJoins struct {
	g   outboundGate
	acl interface {
		CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error)
	}
}

func (r residencyJoins) Enabled() bool { return r.g.on() }

func (r residencyJoins) RemoteRoomZone(ctx context.Context, roomID string, facts residency.RoomFacts) (residency.Classification, error) {
	c, err := r.g.p.RoomZone(ctx, roomID)
	if !errors.Is(err, residency.ErrUnknownRoom) {
		return c, err
	}
	return r.g.p.Rules().Classify(facts)
}

func (r residencyJoins) PinRoomZone(ctx context.Context, roomID string, c residency.Classification) (residency.Classification, error) {
	return r.g.p.Pin(ctx, roomID, c, "classified")
}

func (r residencyJoins) Admits(zone, server string) residency.Decision {
	return r.g.p.Rules().Admits(zone, server, residency.Events)
}

// Join: the policy's decision, and, when it allows, the room's ACL must
// allow the server too. The ACL is the zone's mirror on the server that
// holds the room, and this server's classification of a room held
// elsewhere may be wider (it rests on the alias our user joined by): an
// invite carries the room's stripped state to a server that could never
// join.
func (r residencyJoins) Join(ctx context.Context, roomID, server string) residency.Decision {
	d := r.g.p.Join(ctx, roomID, server)
	if !d.Allowed || d.Rule == residency.RuleDisabled || d.Rule == residency.RuleOurServer || r.acl == nil {
		return d
	}
	ev, err := r.acl.CurrentStateEvent(ctx, roomID, "m.room.server_acl", "")
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return d
	case err != nil:
		d.Allowed, d.Rule = false, "residency.unknown_room"
		d.Reason = "this server cannot read the room's m.room.server_acl, so it cannot tell whether " + server + " may have the room's data"
	case !federationapi.ACLAllows(ev.JSON, server):
		d.Allowed, d.Rule = false, "m.room.server_acl"
		d.Reason = "the room's m.room.server_acl does not allow " + server + " (its zone's mirror on the servers that hold it), so it may not be invited"
	}
	return d
}

func (r residencyJoins) Refused(d residency.Decision, server, purpose, roomID string) {
	if r.g.audit != nil {
		r.g.audit.Refusal(r.g.us, audit.ResidencyRefusal(d, audit.Outbound, server, purpose, residency.Events, roomID))
	}
}

// senderResidency is the policy as the federation sender and the EDU queue
// ask it: nil when it is off, so that they do not ask at all.
func (s *Server) senderResidency() federationsender.Residency {
	if !s.Residency.Enabled() {
		return nil
	}
	return s.Residency
}
