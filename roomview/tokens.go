package roomview

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
// next_batch): only the first number is used. Stream positions may be
// negative: backfilled history is stored below position 0
// (storage.InsertHistoricalEvents), e.g. "t12_-40", "s-40" (relations).

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

// ParseToken parses a pagination token. Positions are written in decimal
// without sign or leading zeros, so that each token has one spelling.
func ParseToken(s string) (Token, error) {
	switch {
	case strings.HasPrefix(s, "t"):
		d, st, ok := strings.Cut(s[1:], "_")
		depth, ok1 := parsePosition(d)
		stream, ok2 := parseStreamPosition(st)
		if !ok || !ok1 || !ok2 {
			return Token{}, fmt.Errorf("invalid token %q", s)
		}
		return Token{Topological: true, Depth: depth, Stream: stream}, nil
	case strings.HasPrefix(s, "s"):
		num, _, _ := strings.Cut(s[1:], "_")
		stream, ok := parseStreamPosition(num)
		if !ok {
			return Token{}, fmt.Errorf("invalid token %q", s)
		}
		return Token{Stream: stream}, nil
	}
	return Token{}, fmt.Errorf("invalid token %q", s)
}

// parsePosition parses a non-negative decimal as tokens write it.
func parsePosition(s string) (int64, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// parseStreamPosition parses a stream position: a position as parsePosition
// reads it, or a negative one ("-" and a non-zero position).
func parseStreamPosition(s string) (int64, bool) {
	if rest, neg := strings.CutPrefix(s, "-"); neg {
		n, ok := parsePosition(rest)
		return -n, ok && n != 0
	}
	return parsePosition(s)
}

func (t Token) topo() storage.TopoPos { return storage.TopoPos{Depth: t.Depth, Stream: t.Stream} }
