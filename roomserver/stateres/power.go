package stateres

import (
	"math"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// infinitePower is the power level of room creators in room versions with
// privileged creators (v12). Power levels there are limited to ±2⁵³, so this
// compares above any real level.
const infinitePower int64 = math.MaxInt64

// powerLevels is the part of an m.room.power_levels event needed to rank
// senders: parsed once per event and cached, since many events cite the same
// power levels.
type powerLevels struct {
	users        map[id.UserID]int64
	usersDefault int64
}

func parsePowerLevels(content []byte) *powerLevels {
	pl := &powerLevels{users: make(map[id.UserID]int64)}
	if v, ok := parseLevel(gjson.GetBytes(content, "users_default")); ok {
		pl.usersDefault = v
	}
	gjson.GetBytes(content, "users").ForEach(func(key, value gjson.Result) bool {
		if v, ok := parseLevel(value); ok {
			pl.users[id.UserID(key.Str)] = v
		}
		return true
	})
	return pl
}

func (pl *powerLevels) level(user id.UserID) int64 {
	if v, ok := pl.users[user]; ok {
		return v
	}
	return pl.usersDefault
}

// parseLevel reads a power level leniently, like Python's int(): room versions
// before 10 allow string and float levels, and servers read them this way.
func parseLevel(v gjson.Result) (int64, bool) {
	switch v.Type {
	case gjson.Number:
		return v.Int(), true
	case gjson.String:
		n, err := strconv.ParseInt(strings.TrimSpace(v.Str), 10, 64)
		return n, err == nil
	case gjson.True:
		return 1, true
	case gjson.False:
		return 0, true
	default:
		return 0, false
	}
}

func isStateKey(evt *pdu.PDU, evtType, stateKey string) bool {
	return evt != nil && evt.Type == evtType && evt.StateKey != nil && *evt.StateKey == stateKey
}

// isPowerEvent reports whether an event is a power event as defined by state
// resolution v2: one that might remove someone's ability to do something.
// (Synapse also counts m.room.create, which is in the full conflicted set
// only in degenerate cases and is then first in either ordering.)
func isPowerEvent(evt *pdu.PDU) bool {
	if evt.StateKey == nil {
		return false
	}
	switch evt.Type {
	case event.StatePowerLevels.Type, event.StateJoinRules.Type:
		return true
	case event.StateMember.Type:
		membership := event.Membership(gjson.GetBytes(evt.Content, "membership").Str)
		return (membership == event.MembershipLeave || membership == event.MembershipBan) &&
			*evt.StateKey != evt.Sender.String()
	}
	return false
}

// isCreator reports whether user is a creator per the create event: its sender
// plus additional_creators (room v12 and later).
func isCreator(create *pdu.PDU, user id.UserID) bool {
	if create.Sender == user {
		return true
	}
	found := false
	gjson.GetBytes(create.Content, "additional_creators").ForEach(func(_, v gjson.Result) bool {
		found = v.Type == gjson.String && id.UserID(v.Str) == user
		return !found
	})
	return found
}

// legacyCreator is the user given power level 100 when a room has no power
// levels event (room versions before 12).
func legacyCreator(roomVersion id.RoomVersion, create *pdu.PDU) id.UserID {
	if roomVersion.CreatorInContent() {
		return id.UserID(gjson.GetBytes(create.Content, "creator").Str)
	}
	return create.Sender
}
