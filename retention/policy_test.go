package retention

import (
	"slices"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

const day = 24 * time.Hour

func TestParsePolicy(t *testing.T) {
	for _, c := range []struct {
		content string
		want    Policy
	}{
		{`{"max_lifetime": 86400000}`, Policy{MaxLifetime: day}},
		{`{"min_lifetime": 3600000, "max_lifetime": 86400000}`, Policy{MinLifetime: time.Hour, MaxLifetime: day}},
		{`{}`, Policy{}},
		{`{"max_lifetime": "86400000"}`, Policy{}},            // not a number
		{`{"max_lifetime": 1.5}`, Policy{}},                   // not an integer
		{`{"max_lifetime": -5, "min_lifetime": 0}`, Policy{}}, // not positive
		{`{"max_lifetime": 1e300}`, Policy{MaxLifetime: time.Duration(1<<63-1) / time.Millisecond * time.Millisecond}},
		{`not json`, Policy{}},
	} {
		if got := ParsePolicy(c.content); got != c.want {
			t.Errorf("ParsePolicy(%s) = %+v, want %+v", c.content, got, c.want)
		}
	}
}

func TestLifetimeBounds(t *testing.T) {
	room := func(min, max time.Duration) *Policy { return &Policy{MinLifetime: min, MaxLifetime: max} }
	for _, c := range []struct {
		name   string
		bounds Bounds
		room   *Policy
		want   time.Duration
		ok     bool
	}{
		{"nothing anywhere: kept forever", Bounds{}, nil, 0, false},
		{"server max alone does not purge rooms without a lifetime", Bounds{MaxLifetime: day}, nil, 0, false},
		{"room policy without max_lifetime: kept forever", Bounds{}, room(time.Hour, 0), 0, false},
		{"room max", Bounds{}, room(0, 3*day), 3 * day, true},
		{"default for rooms without a policy", Bounds{Default: Policy{MaxLifetime: 7 * day}}, nil, 7 * day, true},
		{"room overrides the default", Bounds{Default: Policy{MaxLifetime: 7 * day}}, room(0, 2*day), 2 * day, true},
		{"room without max takes the default's", Bounds{Default: Policy{MaxLifetime: 7 * day}}, room(time.Hour, 0), 7 * day, true},
		{"room max below the server min is raised", Bounds{MinLifetime: day}, room(0, time.Hour), day, true},
		{"room max above the server max is lowered", Bounds{MaxLifetime: 30 * day}, room(0, 365*day), 30 * day, true},
		{"default brought within the server bounds", Bounds{MaxLifetime: 30 * day, Default: Policy{MaxLifetime: 90 * day}}, nil, 30 * day, true},
		{"room min_lifetime raises a shorter max", Bounds{}, room(5*day, 2*day), 5 * day, true},
		{"room min_lifetime cannot exceed the server max", Bounds{MaxLifetime: 3 * day}, room(5*day, 2*day), 3 * day, true},
		{"default min_lifetime applies to a room without one", Bounds{Default: Policy{MinLifetime: 4 * day}}, room(0, day), 4 * day, true},
	} {
		got, ok := c.bounds.Lifetime(c.room)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: Lifetime = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestMXCURIs(t *testing.T) {
	content := gjson.Parse(`{"msgtype":"m.image","body":"see mxc://x/y in text","url":"mxc://example.org/abc_DEF-1",
		"info":{"thumbnail_url":"mxc://example.org/thumb"},"file":{"url":"mxc://other.net/enc"},
		"bad":["mxc://example.org/../etc","mxc://example.org/","mxc:///x","http://example.org/x"]}`)
	got := mxcURIs(content)
	slices.Sort(got)
	want := []string{"mxc://example.org/abc_DEF-1", "mxc://example.org/thumb", "mxc://other.net/enc"}
	if !slices.Equal(got, want) {
		t.Fatalf("mxcURIs = %v, want %v", got, want)
	}
}
