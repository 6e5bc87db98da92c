package roomserver

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

// TestFieldsTooLong: before room version 11 the 255 limit counts codepoints
// (Complement's TestOutboundFederationEventSizeGetMissingEvents: a v10 event
// with a 280-byte, 70-codepoint state key fetched by get_missing_events is
// accepted), from 11 bytes.
func TestFieldsTooLong(t *testing.T) {
	emoji := strings.Repeat("💥", 70) // 280 bytes, 70 codepoints
	long := strings.Repeat("a", 256)
	for _, c := range []struct {
		version  string
		typ      string
		stateKey *string
		want     bool
	}{
		{"10", "my.room.breaker", &emoji, false},
		{"11", "my.room.breaker", &emoji, true},
		{"10", long, nil, true},
		{"10", "m.room.message", &long, true},
		{"12", "m.room.message", nil, false},
	} {
		if got := fieldsTooLong(id.RoomVersion(c.version), c.typ, "@charlie:remote.test", c.stateKey); got != c.want {
			t.Errorf("v%s type %d bytes: got %v, want %v", c.version, len(c.typ), got, c.want)
		}
	}
}
