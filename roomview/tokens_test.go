package roomview

import "testing"

// TestParseTokenOneSpelling: a pagination token has one spelling — negative,
// signed or zero-padded positions are refused (FuzzParseToken's seed "t-1_0"
// was accepted with depth -1).
func TestParseTokenOneSpelling(t *testing.T) {
	for _, s := range []string{"t-1_0", "t1_-0", "t1_-01", "t+1_2", "t1_+2", "t01_2", "t1_02", "s+5", "s-0", "s-05", "s05", "s", "t1", "t_1", "t1_"} {
		if tok, err := ParseToken(s); err == nil {
			t.Errorf("ParseToken(%q) = %+v, want an error", s, tok)
		}
	}
	for s, want := range map[string]Token{
		"t0_0":     {Topological: true},
		"t12_345":  {Topological: true, Depth: 12, Stream: 345},
		"t12_-40":  {Topological: true, Depth: 12, Stream: -40}, // backfilled history
		"s-40":     {Stream: -40},
		"s0":       {},
		"s5_17_3":  {Stream: 5}, // a /sync next_batch
		"s9_x":     {Stream: 9},
		"t1_9_abc": {}, // the stream part is not a number
	} {
		got, err := ParseToken(s)
		if s == "t1_9_abc" {
			if err == nil {
				t.Errorf("ParseToken(%q) accepted", s)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
}
