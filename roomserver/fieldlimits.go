package roomserver

import (
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// fieldsTooLong tells whether a received event's type, sender or state key
// exceeds MaxFieldBytes. Room versions before 11 count codepoints, as Synapse
// always has (an older room may hold a 280-byte, 70-codepoint state key that
// its other servers accepted; refusing it would cut the DAG there); from
// version 11 (Synapse's "strict event byte limits") bytes count.
func fieldsTooLong(version id.RoomVersion, typ, sender string, stateKey *string) bool {
	length := utf8.RuneCountInString
	if version.RedactsInContent() { // v11 and later (and versions we do not know)
		length = func(s string) int { return len(s) }
	}
	return length(typ) > MaxFieldBytes || length(sender) > MaxFieldBytes || (stateKey != nil && length(*stateKey) > MaxFieldBytes)
}
