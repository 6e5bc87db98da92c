package remotejoin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/joinalias"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/roomserver"
)

// Residency is the data-localization policy as remote joins, knocks and
// invites ask it (homeserver fills it from *residency.Policy and the audit
// trail).
type Residency interface {
	// Enabled: the policy is on (off: nothing is asked).
	Enabled() bool
	// RemoteRoomZone is the zone of a room: the one recorded, else its
	// classification by facts (not recorded: PinRoomZone does once the
	// join succeeds).
	RemoteRoomZone(ctx context.Context, roomID string, facts residency.RoomFacts) (residency.Classification, error)
	// PinRoomZone records c as roomID's zone unless one is recorded, and
	// returns the recorded one.
	PinRoomZone(ctx context.Context, roomID string, c residency.Classification) (residency.Classification, error)
	// Admits decides whether server may have the events of a room of zone.
	Admits(zone, server string) residency.Decision
	// Join decides whether server may join (or be invited to) roomID.
	Join(ctx context.Context, roomID, server string) residency.Decision
	// Refused records an outbound refusal in the audit trail.
	Refused(d residency.Decision, server, purpose, roomID string)
}

// residencyOn reports whether the policy is asked.
func (j *Joiner) residencyOn() bool { return j.res != nil && j.res.Enabled() }

// admitCandidates classifies roomID from what we know before asking anyone
// (the alias the client joined by) and keeps the candidates the room's zone
// admits; a refused candidate is recorded, and none left is 403 M_FORBIDDEN
// with the policy's reason: nothing was asked of any server.
func (j *Joiner) admitCandidates(ctx context.Context, roomID id.RoomID, candidates []string, purpose string) (
	residency.Classification, []string, error) {
	if !j.residencyOn() {
		return residency.Classification{}, candidates, nil
	}
	facts := residency.RoomFacts{}
	if a := joinalias.From(ctx); a != "" {
		facts.Aliases = []string{a}
	}
	c, err := j.res.RemoteRoomZone(ctx, string(roomID), facts)
	if err != nil {
		return c, nil, roomserver.Forbidden("This server cannot tell which zone the room is resident in: %v", err)
	}
	var kept []string
	var first *residency.Decision
	for _, server := range candidates {
		d := j.res.Admits(c.Zone, server)
		if d.Allowed {
			kept = append(kept, server)
			continue
		}
		j.res.Refused(d, server, purpose, string(roomID))
		if first == nil {
			first = &d
		}
	}
	if len(kept) == 0 && first != nil {
		return c, nil, roomserver.Forbidden("%s", first.Reason)
	}
	return c, kept, nil
}

// stateFacts adds to facts what the room state a resident answered says:
// m.room.create's sender and type, the canonical alias and alt_aliases.
func stateFacts(facts residency.RoomFacts, state []json.RawMessage) residency.RoomFacts {
	for _, raw := range state {
		ev := gjson.ParseBytes(raw)
		if ev.Get("state_key").Str != "" {
			continue
		}
		switch ev.Get("type").Str {
		case "m.room.create":
			facts.Creator = ev.Get("sender").Str
			if t := ev.Get("content.type"); t.Type == gjson.String {
				facts.RoomType = t.Str
			}
		case "m.room.canonical_alias":
			if a := ev.Get("content.alias"); a.Type == gjson.String && a.Str != "" {
				facts.Aliases = append(facts.Aliases, a.Str)
			}
			for _, a := range ev.Get("content.alt_aliases").Array() {
				if a.Type == gjson.String {
					facts.Aliases = append(facts.Aliases, a.Str)
				}
			}
		}
	}
	return facts
}

// afterJoin records the zone of a room just joined (classified by the
// alias asked by and the returned state, unless one is recorded) and
// records a refusal naming the servers of joined members the zone does not
// admit: the sender withholds the room's data from them.
func (j *Joiner) afterJoin(ctx context.Context, roomID id.RoomID, state []json.RawMessage) {
	if !j.residencyOn() {
		return
	}
	facts := residency.RoomFacts{}
	if a := joinalias.From(ctx); a != "" {
		facts.Aliases = []string{a}
	}
	facts = stateFacts(facts, state)
	c, err := j.res.RemoteRoomZone(ctx, string(roomID), facts)
	if err == nil {
		c, err = j.res.PinRoomZone(ctx, string(roomID), c)
	}
	if err != nil {
		slog.Warn("remotejoin: recording the zone of a room joined", "room", roomID, "err", err)
		return
	}
	var outside []string
	var first residency.Decision
	for _, raw := range state {
		ev := gjson.ParseBytes(raw)
		if ev.Get("type").Str != "m.room.member" || ev.Get("content.membership").Str != "join" {
			continue
		}
		_, server, ok := cutServer(ev.Get("state_key").Str)
		if !ok || server == j.serverName || slices.Contains(outside, server) {
			continue
		}
		if d := j.res.Admits(c.Zone, server); !d.Allowed {
			if len(outside) == 0 {
				first = d
			}
			outside = append(outside, server)
		}
	}
	if len(outside) == 0 {
		return
	}
	// One record for the join, naming (at most 20 of) the servers.
	names := outside[:min(len(outside), 20)]
	first.Reason = fmt.Sprintf("room %s, joined, has members on servers its zone %s does not admit (%s); "+
		"this server withholds the room's data from them: %s", roomID, c.Zone, strings.Join(names, ", "), first.Reason)
	j.res.Refused(first, outside[0], "join", string(roomID))
}

// admitKnock keeps the candidates of a knock the room's zone admits (as a
// join's; nothing is recorded of the room's zone: a knock stores nothing of
// the room but the knock).
func (j *Joiner) admitKnock(ctx context.Context, roomID id.RoomID, candidates []string) ([]string, error) {
	_, kept, err := j.admitCandidates(ctx, roomID, candidates, "knock")
	return kept, err
}
