package roomserver

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// maxCanonicalInt bounds every integer this server signs: canonical JSON
// carries integers in [-(2^53)+1, 2^53-1] only, and a value outside makes
// the event impossible to hash and sign.
const maxCanonicalInt = 1<<53 - 1

// clampCanonical brings n into canonical JSON's integer range.
func clampCanonical(n int64) int64 { return max(-maxCanonicalInt, min(n, maxCanonicalInt)) }

// levelValue reads a power level as the auth rules do: an integer, or in
// room versions before 10 also a string holding one (Python's int()).
func levelValue(v gjson.Result) (int64, bool) {
	switch v.Type {
	case gjson.Number:
		n, err := strconv.ParseInt(v.Raw, 10, 64)
		return n, err == nil
	case gjson.String:
		n, err := strconv.ParseInt(strings.TrimSpace(v.Str), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// parsePowerLevels decodes power levels content, string levels included for
// the room versions that allow them (encoding/json would drop those).
func parsePowerLevels(version id.RoomVersion, content []byte) *event.PowerLevelsEventContent {
	pl := &event.PowerLevelsEventContent{}
	if err := json.Unmarshal(content, pl); err == nil || version.ValidatePowerLevelInts() {
		return pl
	}
	obj := gjson.ParseBytes(content)
	level := func(key string) *int {
		if n, ok := levelValue(obj.Get(key)); ok {
			i := int(n)
			return &i
		}
		return nil
	}
	deref := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	pl = &event.PowerLevelsEventContent{
		Users: map[id.UserID]int{}, Events: map[string]int{},
		UsersDefault: deref(level("users_default")), EventsDefault: deref(level("events_default")),
		StateDefaultPtr: level("state_default"), InvitePtr: level("invite"), KickPtr: level("kick"),
		BanPtr: level("ban"), RedactPtr: level("redact"),
	}
	obj.Get("users").ForEach(func(k, v gjson.Result) bool {
		if n, ok := levelValue(v); ok {
			pl.Users[id.UserID(k.Str)] = int(n)
		}
		return true
	})
	obj.Get("events").ForEach(func(k, v gjson.Result) bool {
		if n, ok := levelValue(v); ok {
			pl.Events[k.Str] = int(n)
		}
		return true
	})
	return pl
}

// integerLevels rewrites power levels content for a new room: every level
// an integer within canonical range (string levels of old room versions
// converted, unreadable ones dropped), other keys kept as they are.
func integerLevels(content map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(content))
	for k, raw := range content {
		switch k {
		case "users", "events", "notifications":
			m := map[string]int64{}
			gjson.ParseBytes(raw).ForEach(func(kk, v gjson.Result) bool {
				if n, ok := levelValue(v); ok {
					m[kk.Str] = clampCanonical(n)
				}
				return true
			})
			out[k] = MustJSON(m)
		case "ban", "events_default", "invite", "kick", "redact", "state_default", "users_default":
			if n, ok := levelValue(gjson.ParseBytes(raw)); ok {
				out[k] = MustJSON(clampCanonical(n))
			}
		default:
			out[k] = raw
		}
	}
	return out
}

// highestLevel is the highest level named in power levels content: the
// level a v12 room creator, above everyone there, keeps in a room of an
// earlier version.
func highestLevel(content map[string]json.RawMessage) int64 {
	top := int64(math.MinInt64)
	for k, raw := range content {
		switch k {
		case "users", "events", "notifications":
			gjson.ParseBytes(raw).ForEach(func(_, v gjson.Result) bool {
				if n, ok := levelValue(v); ok {
					top = max(top, n)
				}
				return true
			})
		case "ban", "events_default", "invite", "kick", "redact", "state_default", "users_default":
			if n, ok := levelValue(gjson.ParseBytes(raw)); ok {
				top = max(top, n)
			}
		}
	}
	return clampCanonical(top)
}

// checkCreatorsUnlisted refuses power levels that list a room creator in
// users: from v12 creators rank above every level and the auth rules reject
// such an event (MSC4289). A client's request that would make one is bad
// input (400), not a permission failure.
func checkCreatorsUnlisted(content []byte, creators []id.UserID) error {
	isCreator := map[string]bool{}
	for _, c := range creators {
		isCreator[string(c)] = true
	}
	var err error
	gjson.GetBytes(content, "users").ForEach(func(k, _ gjson.Result) bool {
		if isCreator[k.Str] {
			err = InvalidParam("%s is a creator of this room and cannot be listed in power levels users", k.Str)
		}
		return err == nil
	})
	return err
}
