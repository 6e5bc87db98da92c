package roomview

import (
	"strings"
	"testing"
)

// FuzzParseToken: a /messages pagination token is refused or parsed into
// a non-negative depth (stream positions are negative in backfilled history), and writing the parsed token back gives the token
// itself (for a stream token, its first part: the rest of a /sync next_batch
// is ignored) — no second spelling of a position.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"t1_2", "s5", "s5_0_0", "t-1_0", "s-1", "t1", "t_", "x", "", "t9223372036854775807_0", "t3_-40", "t3_-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		if tok.Depth < 0 {
			t.Fatalf("ParseToken(%q) = %+v", s, tok)
		}
		written := StreamToken(tok.Stream)
		want, _, _ := strings.Cut(s, "_")
		if tok.Topological {
			written, want = TopologicalToken(tok.Depth, tok.Stream), s
		}
		if written != want {
			t.Fatalf("ParseToken(%q) = %+v, written %q: two spellings of one token", s, tok, written)
		}
	})
}
