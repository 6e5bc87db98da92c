package tests

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationErasure: alice (a.test) sends messages and deactivates with
// erase; carol on b.test joins afterwards and pages back: b.test backfills
// from a.test, which serves alice's events redacted, so neither carol nor
// b.test's store ever holds their content; dave's (not erased) come whole.
func TestFederationErasure(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice, dave := a.Register(t, "alice"), a.Register(t, "dave")
			carol := b.Register(t, "carol")
			room := shareRoom(t, alice, dave)
			var aliceIDs []string
			for i := range 5 {
				aliceIDs = append(aliceIDs, string(sendText(t, alice, room, fmt.Sprintf("xyzzy secret %d", i))))
				sendText(t, dave, room, fmt.Sprintf("plugh %d", i))
			}
			deactivate(t, alice, "alice", true)
			if _, err := carol.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("remote join: %v", err)
			}
			evs, _ := walkBack(t, carol, room, "", 4)
			got := bodies(evs)
			for i := range 5 {
				if !slices.Contains(got, fmt.Sprintf("plugh %d", i)) {
					t.Errorf("carol's /messages lacks dave's plugh %d: %v", i, got)
				}
			}
			for _, body := range got {
				if strings.Contains(body, "xyzzy") {
					t.Errorf("carol's /messages shows an erased message: %v", got)
				}
			}
			for _, id := range aliceIDs {
				if se, err := b.DB.GetEvent(ctx, id); err == nil && strings.Contains(string(se.JSON), "xyzzy") {
					t.Errorf("b.test stored alice's erased event whole: %s", se.JSON)
				}
			}
		})
	}
}
