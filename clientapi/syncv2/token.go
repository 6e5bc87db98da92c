package syncv2

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Token is a position in everything /sync reports: the one stream position,
// the in-memory typing serial, and how far the device's to-device messages
// were delivered (at most Pos; lower when a response carried only the first
// batch of them). Clients see it as the opaque string "s<pos>_<typing>_<todevice>".
// It survives restarts: the stream only grows and the typing serial restarts
// at the start-up time in milliseconds.
type Token struct {
	Pos      int64
	Typing   int64
	ToDevice int64
}

func (t Token) String() string { return fmt.Sprintf("s%d_%d_%d", t.Pos, t.Typing, t.ToDevice) }

// ParseToken decodes a since token; anything malformed is M_INVALID_PARAM.
func ParseToken(s string) (Token, error) {
	bad := mxhttp.InvalidParam("Invalid since token %q", s)
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return Token{}, bad
	}
	parts := strings.Split(rest, "_")
	if len(parts) != 3 {
		return Token{}, bad
	}
	var n [3]int64
	for i, p := range parts {
		// Digits only, as String writes them: ParseInt also takes "+0" and "-0".
		if p == "" || p[0] < '0' || p[0] > '9' || (len(p) > 1 && p[0] == '0') {
			return Token{}, bad
		}
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return Token{}, bad
		}
		n[i] = v
	}
	t := Token{Pos: n[0], Typing: n[1], ToDevice: n[2]}
	if t.ToDevice > t.Pos {
		return Token{}, bad
	}
	return t, nil
}
