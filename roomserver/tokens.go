package roomserver

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/myelin-chat/myelin/storage"
)

// Pagination tokens for /messages, /context and /relations:
//
//	"t<depth>_<stream>"  a point in a room's topological order: just after
//	                     the event at (depth, stream position)
//	"s<stream>"          a point in the stream: just after stream position N
//
// /sync's prev_batch for a timeline starting at event E is StreamToken(E.StreamPos-1)
// (or TopologicalToken(E.Depth, E.StreamPos-1)); /messages accepts both.
// A stream token may carry more, underscore-separated, parts (a /sync
// next_batch): only the first number is used.

// StreamToken is the token for the point just after stream position pos.
func StreamToken(pos int64) string { return "s" + strconv.FormatInt(pos, 10) }

// TopologicalToken is the token for the point just after (depth, stream).
func TopologicalToken(depth, stream int64) string {
	return "t" + strconv.FormatInt(depth, 10) + "_" + strconv.FormatInt(stream, 10)
}

// Token is a parsed pagination token.
type Token struct {
	Topological bool
	Depth       int64
	Stream      int64
}

// ParseToken parses a pagination token.
func ParseToken(s string) (Token, error) {
	switch {
	case strings.HasPrefix(s, "t"):
		d, st, ok := strings.Cut(s[1:], "_")
		depth, err1 := strconv.ParseInt(d, 10, 64)
		stream, err2 := strconv.ParseInt(st, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return Token{}, fmt.Errorf("invalid token %q", s)
		}
		return Token{Topological: true, Depth: depth, Stream: stream}, nil
	case strings.HasPrefix(s, "s"):
		num, _, _ := strings.Cut(s[1:], "_")
		stream, err := strconv.ParseInt(num, 10, 64)
		if err != nil || stream < 0 {
			return Token{}, fmt.Errorf("invalid token %q", s)
		}
		return Token{Stream: stream}, nil
	}
	return Token{}, fmt.Errorf("invalid token %q", s)
}

func (t Token) topo() storage.TopoPos { return storage.TopoPos{Depth: t.Depth, Stream: t.Stream} }
