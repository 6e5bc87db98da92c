package sync

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Token is a position in everything /sync reports: the one stream position
// and the in-memory typing serial. Clients see it as an opaque string
// "s<pos>_<typing>"; it survives restarts because both parts only grow (the
// typing serial restarts at the start-up time in milliseconds).
type Token struct {
	Pos    int64
	Typing int64
}

func (t Token) String() string { return fmt.Sprintf("s%d_%d", t.Pos, t.Typing) }

// ParseToken decodes a since token; anything malformed is M_INVALID_PARAM.
func ParseToken(s string) (Token, error) {
	bad := mxhttp.InvalidParam("Invalid since token %q", s)
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return Token{}, bad
	}
	posStr, typStr, ok := strings.Cut(rest, "_")
	if !ok {
		return Token{}, bad
	}
	pos, err1 := strconv.ParseInt(posStr, 10, 64)
	typ, err2 := strconv.ParseInt(typStr, 10, 64)
	if err1 != nil || err2 != nil || pos < 0 || typ < 0 {
		return Token{}, bad
	}
	return Token{Pos: pos, Typing: typ}, nil
}
