package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/roomserver"
)

// ResidencyKey is the key of m.room.create's content where the server pins
// the room's residency zone ({"zone": "eu"}), and the key of
// creation_content where a creator may ask for one. Clients may not send
// state events of this type.
const ResidencyKey = "org.myelin.residency"

// ResidencyCreation is what the room handlers ask of the data-localization
// policy (*residency.Policy): the rules that classify a new room, and the
// record of each room's zone.
type ResidencyCreation interface {
	Rules() *residency.Rules
	Pin(ctx context.Context, roomID string, c residency.Classification, source string) (residency.Classification, error)
	RoomZone(ctx context.Context, roomID string) (residency.Classification, error)
}

func (a *API) residencyOn() bool {
	return a.ResidencyCreation != nil && a.ResidencyCreation.Rules().Enabled()
}

// residencyAtCreation classifies the room a createRoom request makes and
// writes the decision into the request: the zone into m.room.create's
// content (replacing whatever the client put there) and m.room.server_acl,
// allowing only the servers the zone admits, into the state the server adds
// after initial_state. With the policy off the client's key is dropped (no
// client claims a zone). It returns the classification to pin once the
// room exists (nil with the policy off).
func (a *API) residencyAtCreation(user id.UserID, req *roomserver.CreateRoomRequest) (*residency.Classification, error) {
	for _, st := range req.InitialState {
		if st.Type == ResidencyKey {
			return nil, mxhttp.Forbidden("State events of type %s are set by the server", ResidencyKey)
		}
	}
	raw, asked := req.CreationContent[ResidencyKey]
	if !a.residencyOn() {
		delete(req.CreationContent, ResidencyKey)
		return nil, nil
	}
	var choice string
	if asked {
		var err error
		if choice, err = parseResidencyChoice(raw); err != nil {
			return nil, err
		}
	}
	facts := residency.RoomFacts{Creator: string(user), Choice: choice}
	if t := req.CreationContent["type"]; len(t) > 0 {
		facts.RoomType = gjson.ParseBytes(t).String()
	}
	if req.RoomAliasName != "" {
		facts.Aliases = []string{"#" + req.RoomAliasName + ":" + a.Config.ServerName}
	}
	rules := a.ResidencyCreation.Rules()
	c, err := rules.Classify(facts)
	var choiceErr *residency.ChoiceError
	if errors.As(err, &choiceErr) {
		return nil, mxhttp.Forbidden(choiceErr.Error())
	}
	if err != nil {
		return nil, err
	}
	if req.CreationContent == nil {
		req.CreationContent = map[string]json.RawMessage{}
	}
	req.CreationContent[ResidencyKey] = roomserver.MustJSON(map[string]string{"zone": c.Zone})
	if patterns := rules.AdmittedPatterns(c.Zone); !slices.Contains(patterns, "*") {
		req.ServerState = append(req.ServerState, roomserver.InitialStateEvent{Type: "m.room.server_acl",
			Content: roomserver.MustJSON(map[string]any{"allow": patterns, "deny": []string{}, "allow_ip_literals": false})})
	}
	return &c, nil
}

// parseResidencyChoice reads creation_content's org.myelin.residency:
// exactly {"zone": "<name>"}.
func parseResidencyChoice(raw json.RawMessage) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return "", mxhttp.BadJSON("creation_content.%s must be an object {\"zone\": \"<zone name>\"}", ResidencyKey)
	}
	for k := range obj {
		if k != "zone" {
			return "", mxhttp.InvalidParam("creation_content.%s has an unknown key %q (only \"zone\")", ResidencyKey, k)
		}
	}
	var zone string
	if err := json.Unmarshal(obj["zone"], &zone); err != nil {
		return "", mxhttp.BadJSON("creation_content.%s.zone must be a string", ResidencyKey)
	}
	if zone == "" || len(zone) > 64 {
		return "", mxhttp.InvalidParam("creation_content.%s.zone must name a zone", ResidencyKey)
	}
	return zone, nil
}

// pinCreated records the zone of a room just created. A failure is logged:
// the zone is in m.room.create, from which RoomZone recovers it.
func (a *API) pinCreated(ctx context.Context, roomID id.RoomID, c residency.Classification) {
	if _, err := a.ResidencyCreation.Pin(ctx, string(roomID), c, "created"); err != nil {
		slog.ErrorContext(ctx, "residency: recording a new room's zone", "room_id", roomID, "zone", c.Zone, "err", err)
	}
}

// pinUpgraded records that an upgraded room's replacement is in the old
// room's zone (its m.room.create carries the old one's pin and its
// m.room.server_acl is carried over by the upgrade).
func (a *API) pinUpgraded(ctx context.Context, oldRoom, newRoom id.RoomID) {
	if !a.residencyOn() {
		return
	}
	c, err := a.ResidencyCreation.RoomZone(ctx, string(oldRoom))
	if err != nil {
		slog.ErrorContext(ctx, "residency: the zone of an upgraded room", "room_id", oldRoom, "err", err)
		return
	}
	c.Reason = "the replacement of " + string(oldRoom) + ", resident in zone " + c.Zone
	a.pinCreated(ctx, newRoom, c)
}

// checkResidencyState refuses what a local client may not send as room
// state: org.myelin.residency (the server's), and an m.room.server_acl
// allowing a server the room's zone does not admit: each allow entry that
// is a literal host is checked, "*" is refused unless the zone admits every
// server, and another wildcard must lie within one of the zone's patterns.
func (a *API) checkResidencyState(ctx context.Context, roomID id.RoomID, evType string, content json.RawMessage) error {
	if evType == ResidencyKey {
		return mxhttp.Forbidden("State events of type %s are set by the server", ResidencyKey)
	}
	if evType != "m.room.server_acl" || !a.residencyOn() {
		return nil
	}
	c, err := a.ResidencyCreation.RoomZone(ctx, string(roomID))
	if err != nil {
		return nil // a room unknown here: the writer answers
	}
	rules := a.ResidencyCreation.Rules()
	for _, p := range gjson.GetBytes(content, "allow").Array() {
		pattern := strings.ToLower(strings.TrimSpace(p.String()))
		switch {
		case pattern == "*":
			if !slices.Contains(rules.AdmittedPatterns(c.Zone), "*") {
				return mxhttp.Forbidden("The room is resident in zone %s, which does not admit every server: m.room.server_acl may not allow \"*\"", c.Zone)
			}
		case pattern == "":
		case strings.ContainsAny(pattern, "*?"):
			// A wildcard may not reach past the zone ("**", "?*", another
			// zone's "*.us.example"): it must be one of the zone's
			// patterns, or a narrower form of one "*.suffix" pattern.
			if !wildcardWithin(pattern, rules.AdmittedPatterns(c.Zone)) {
				return mxhttp.Forbidden("The room is resident in zone %s: m.room.server_acl may allow %q only if it is one of the zone's patterns (%s) or narrower",
					c.Zone, pattern, strings.Join(rules.AdmittedPatterns(c.Zone), ", "))
			}
		default:
			if d := rules.Admits(c.Zone, pattern, residency.Events); !d.Allowed {
				return mxhttp.Forbidden(d.Reason)
			}
		}
	}
	return nil
}

// wildcardWithin reports whether every server the ACL pattern matches is
// matched by one of the admitted patterns: the pattern is one of them, or an
// admitted "*<suffix>" (suffix without wildcards) and the pattern ends with
// that suffix.
func wildcardWithin(pattern string, admitted []string) bool {
	for _, q := range admitted {
		if pattern == q {
			return true
		}
		if suffix, ok := strings.CutPrefix(q, "*"); ok && !strings.ContainsAny(suffix, "*?") && strings.HasSuffix(pattern, suffix) {
			return true
		}
	}
	return false
}
