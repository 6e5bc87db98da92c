package roomserver

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// ValidRoomID reports whether s has the grammar of a room ID: "!" then an
// opaque part, and (before room v12) ":server".
func ValidRoomID(s string) bool {
	if len(s) < 2 || len(s) > MaxFieldBytes || s[0] != '!' {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// ValidAlias reports whether s is a room alias "#localpart:server".
func ValidAlias(s string) bool {
	if len(s) < 4 || len(s) > MaxFieldBytes || s[0] != '#' {
		return false
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" || server == "" {
		return false
	}
	for _, r := range local {
		if r <= ' ' || r == 0x7f || r == ':' {
			return false
		}
	}
	return validServerName(server)
}

func validServerName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-.:[]", r)) {
			return false
		}
	}
	return true
}

// ValidUserID reports whether s is a user ID (historical characters allowed).
func ValidUserID(s string) bool {
	if len(s) < 4 || len(s) > MaxFieldBytes || s[0] != '@' {
		return false
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" {
		return false
	}
	for _, r := range local {
		if r < 0x21 || r > 0x7e {
			return false
		}
	}
	return validServerName(server)
}

// ValidEventType reports whether t is an acceptable event type.
func ValidEventType(t string) bool {
	if t == "" || len(t) > MaxFieldBytes {
		return false
	}
	for _, r := range t {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// ValidEventID reports whether s looks like an event ID.
func ValidEventID(s string) bool { return len(s) >= 2 && len(s) <= MaxFieldBytes && s[0] == '$' }

// validatePowerLevels checks the shape of power levels content a client
// sends: integer levels and valid user IDs (M_BAD_JSON otherwise), so that
// malformed content is a 400 rather than an auth failure.
func validatePowerLevels(version id.RoomVersion, content []byte) error {
	if !gjson.ValidBytes(content) {
		return NewError(ErrNotJSON, "Content is not JSON")
	}
	obj := gjson.ParseBytes(content)
	if !obj.IsObject() {
		return BadJSON("Power levels must be an object")
	}
	isLevel := func(v gjson.Result) bool {
		if v.Type == gjson.Number { // exactly, from the text: 2^53+1 reads as the float 2^53
			n, err := strconv.ParseInt(v.Raw, 10, 64)
			return err == nil && n == clampCanonical(n)
		}
		if v.Type == gjson.String && !version.ValidatePowerLevelInts() {
			var n json.Number = json.Number(strings.TrimSpace(v.Str))
			_, err := n.Int64()
			return err == nil
		}
		return false
	}
	for _, k := range []string{"ban", "events_default", "invite", "kick", "redact", "state_default", "users_default"} {
		if v := obj.Get(k); v.Exists() && !isLevel(v) {
			return BadJSON("Power level %q must be an integer", k)
		}
	}
	for _, k := range []string{"events", "users", "notifications"} {
		v := obj.Get(k)
		if !v.Exists() {
			continue
		}
		if !v.IsObject() {
			return BadJSON("Power levels %q must be an object", k)
		}
		var err error
		v.ForEach(func(key, val gjson.Result) bool {
			if !isLevel(val) {
				err = BadJSON("Power level %s.%s must be an integer", k, key.Str)
				return false
			}
			if k == "users" && !ValidUserID(key.Str) {
				err = BadJSON("%q in power levels users is not a user ID", key.Str)
				return false
			}
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}
