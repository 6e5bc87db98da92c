// Package authrules is the one way Myelin applies the Matrix authorization
// rules: mautrix's eventauth.Authorize, made safe for events from anyone.
//
//   - A panic inside the rules is a rejection: it is recovered, logged with
//     the event ID, counted (metrics.PanicsRecovered{where="eventauth"}) and
//     returned as an error, so neither a room worker nor state resolution can
//     take the process down.
//   - mautrix v0.32.0 dereferences nil when a power levels event removes a
//     `users` entry whose level equals the sender's own (eventauth.go,
//     allowPowerChangeMap). The spec rejects such an event, so the `users`
//     rule is checked here first and the event never reaches that code.
//     (To be reported upstream; drop the check once mautrix fixes it.)
package authrules

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/exgjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/recovery"
)

// Authorize is eventauth.Authorize (same arguments and meaning) with the
// protections described in the package comment. Any error is a rejection; a
// recovered panic is a *recovery.PanicError.
func Authorize(version id.RoomVersion, evt *pdu.PDU, authEvents []*pdu.PDU, getEvents eventauth.GetEventsFunc, getKey pdu.GetKeyFunc) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = recovery.Recovered(recovery.EventAuth, v, "event_id", eventID(version, evt), "type", evt.Type, "sender", evt.Sender)
		}
	}()
	if err := checkUsersChange(version, evt, authEvents, getEvents); err != nil {
		return err
	}
	return eventauth.Authorize(version, evt, authEvents, getEvents, getKey)
}

// eventID names the event in logs.
func eventID(version id.RoomVersion, evt *pdu.PDU) string {
	if evt.InternalMeta.EventID != "" {
		return string(evt.InternalMeta.EventID)
	}
	if evtID, err := evt.GetEventID(version); err == nil {
		return string(evtID)
	}
	return "(unknown)"
}

// checkUsersChange applies the power levels rule on the `users` map (v1
// auth rules 10.6; "10.9" in v12):
//
//	For each entry being changed in, or removed from, the users property,
//	other than the sender's own entry: If the current value is greater than
//	or equal to the sender's current power level, reject.
//
// It only ever rejects, and only events the full rules reject too (or on
// which mautrix would panic), so running it before eventauth changes no
// outcome. It finds the current power levels and creators the way eventauth
// does; when it cannot, it leaves the decision to eventauth.
func checkUsersChange(version id.RoomVersion, evt *pdu.PDU, authEvents []*pdu.PDU, getEvents eventauth.GetEventsFunc) error {
	if evt.Type != event.StatePowerLevels.Type || evt.StateKey == nil || *evt.StateKey != "" {
		return nil
	}
	if authEvents == nil {
		if getEvents == nil {
			return nil
		}
		fetched, err := getEvents(evt.AuthEvents)
		if err != nil {
			return nil // eventauth fetches again and reports it
		}
		authEvents = fetched
	}
	oldPL := findStateEvent(authEvents, event.StatePowerLevels.Type)
	if oldPL == nil {
		return nil // the first power levels event: no change to check
	}
	if version.PrivilegedRoomCreators() {
		create := findStateEvent(authEvents, event.StateCreate.Type)
		if create == nil && version.RoomIDIsCreateEventID() && getEvents != nil && len(evt.RoomID) > 1 {
			if found, err := getEvents([]id.EventID{id.EventID("$" + evt.RoomID[1:])}); err == nil && len(found) == 1 {
				create = found[0]
			}
		}
		if create == nil {
			return nil // eventauth rejects an event without a create event
		}
		if isCreator(create, evt.Sender) {
			return nil // creators may change any level
		}
	}
	sender := evt.Sender.String()
	senderLevel := parsePythonInt(gjson.GetBytes(oldPL.Content, exgjson.Path("users", sender)))
	if senderLevel == nil {
		if senderLevel = parsePythonInt(gjson.GetBytes(oldPL.Content, "users_default")); senderLevel == nil {
			senderLevel = new(0)
		}
	}
	newUsers := gjson.GetBytes(evt.Content, "users")
	var err error
	gjson.GetBytes(oldPL.Content, "users").ForEach(func(key, value gjson.Result) bool {
		if key.Str == sender {
			return true
		}
		oldLevel := parseIntWithVersion(version, value)
		if oldLevel == nil {
			// The current power levels should never have passed the auth
			// rules; the change cannot be judged.
			err = fmt.Errorf("%w: current level of %s is not an integer", eventauth.ErrInvalidUserPowerChange, key.Str)
			return false
		}
		newLevel := parseIntWithVersion(version, newUsers.Get(exgjson.Path(key.Str)))
		changed := newLevel == nil || *newLevel != *oldLevel
		if changed && *oldLevel >= *senderLevel {
			verb := "remove"
			if newLevel != nil {
				verb = "change"
			}
			err = fmt.Errorf("%w: can't %s users.%s at level %d with sender level %d", eventauth.ErrInvalidUserPowerChange, verb, key.Str, *oldLevel, *senderLevel)
			return false
		}
		return true
	})
	return err
}

// findStateEvent returns the first auth event of the type with an empty
// state key, skipping anything that is not a state event.
func findStateEvent(events []*pdu.PDU, evtType string) *pdu.PDU {
	for _, e := range events {
		if e != nil && e.Type == evtType && e.StateKey != nil && *e.StateKey == "" {
			return e
		}
	}
	return nil
}

// isCreator: the create event's sender or one of its additional_creators
// (room versions with privileged creators).
func isCreator(create *pdu.PDU, user id.UserID) bool {
	if create.Sender == user {
		return true
	}
	found := false
	gjson.GetBytes(create.Content, "additional_creators").ForEach(func(_, v gjson.Result) bool {
		found = id.UserID(v.Str) == user
		return !found
	})
	return found
}

// parseIntWithVersion reads a level as eventauth does: integers only from
// room v10 on, Python int() before.
func parseIntWithVersion(version id.RoomVersion, v gjson.Result) *int {
	if version.ValidatePowerLevelInts() {
		if v.Type != gjson.Number {
			return nil
		}
		return new(int(v.Int()))
	}
	return parsePythonInt(v)
}

// parsePythonInt reads a level like Python's int(), as eventauth does.
func parsePythonInt(v gjson.Result) *int {
	switch v.Type {
	case gjson.True:
		return new(1)
	case gjson.False:
		return new(0)
	case gjson.Number:
		return new(int(v.Int()))
	case gjson.String:
		n, err := strconv.Atoi(strings.TrimSpace(v.Str))
		if err != nil {
			return nil
		}
		return &n
	}
	return nil
}
