package homeserver

import (
	"fmt"
	"testing"
	"time"
)

// TestRefusalWindow: the same refusal once a minute; one server's distinct
// refusals do not use up another's share; a new minute starts afresh.
func TestRefusalWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	w := &refusalWindow{now: func() time.Time { return now }}
	if !w.first("b.test", "k") || w.first("b.test", "k") {
		t.Fatal("the same refusal twice in a minute")
	}
	n := 1
	for i := range 100 {
		if w.first("b.test", fmt.Sprint("room", i)) {
			n++
		}
	}
	if n != maxPeerRefusalsPerServer {
		t.Fatalf("b recorded %d distinct refusals in a minute, want %d", n, maxPeerRefusalsPerServer)
	}
	if !w.first("c.test", "k2") {
		t.Fatal("b's flood used up c's records")
	}
	now = now.Add(time.Minute)
	if !w.first("b.test", "k") {
		t.Fatal("a new minute did not start afresh")
	}
}
