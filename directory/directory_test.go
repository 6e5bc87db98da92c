package directory

import (
	"encoding/json"
	"testing"
)

// TestWithoutAlias: a deleted alias leaves m.room.canonical_alias's alias and
// alt_aliases; other keys stay, an emptied alt_aliases goes, and content
// without the alias (or unset: nil) is left unchanged.
func TestWithoutAlias(t *testing.T) {
	for _, c := range []struct {
		in, want string
		changed  bool
	}{
		{`{"alias":"#a:x","alt_aliases":["#b:x"]}`, `{"alt_aliases":["#b:x"]}`, true},
		{`{"alias":"#b:x","alt_aliases":["#a:x"],"k":1}`, `{"alias":"#b:x","k":1}`, true},
		{`{"alias":"#b:x","alt_aliases":["#a:x","#c:x"]}`, `{"alias":"#b:x","alt_aliases":["#c:x"]}`, true},
		{`{"alias":"#b:x"}`, ``, false},
		{``, ``, false},
	} {
		var in json.RawMessage
		if c.in != "" {
			in = json.RawMessage(c.in)
		}
		got, changed := withoutAlias(in, "#a:x")
		if changed != c.changed || (changed && string(got) != c.want) {
			t.Errorf("withoutAlias(%s) = %s, %v; want %s, %v", c.in, got, changed, c.want, c.changed)
		}
	}
}
