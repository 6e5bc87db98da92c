package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/pgtest"
)

// TestRejectedRemembered (Complement's
// TestInboundFederationRejectsEventsWithRejectedAuthEvents): an event the
// auth rules refuse is never stored but remembered; sent again it is refused
// without being checked again; an event citing it in auth_events is
// rejected (and remembered) too; an event built on rejected ones (its
// prev_events) is placed after the rejected events' own prevs (their state, through
// a chain of rejected events) and accepted
// with no fetching, and so is what follows it.
func TestRejectedRemembered(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, backend)
			w.join(t)
			var txn int
			send := func(raws ...json.RawMessage) map[string]string {
				t.Helper()
				txn++
				res, err := w.eng.Transaction(ctx, "remote.test", fmt.Sprintf("r%d", txn), txnBody(raws...))
				if err != nil {
					t.Fatalf("transaction: %v", err)
				}
				return res
			}
			rejected := func(x id.EventID) bool {
				t.Helper()
				got, err := w.db.RejectedEvents(ctx, []string{string(x)})
				if err != nil {
					t.Fatal(err)
				}
				_, ok := got[string(x)]
				return ok
			}
			head, depth := w.head(t)
			// R: a power-levels change by a user without the power.
			r := w.event(t, "remote.test", ruser, "m.room.power_levels", sk(""), map[string]any{"users": map[string]int{string(ruser): 100}}, head, depth)
			rid := w.eventID(t, r)
			if res := send(raw(t, r)); res[string(rid)] == "" || w.stored(t, rid) != nil || !rejected(rid) {
				t.Fatalf("R: %v, stored %+v, remembered %v", res, w.stored(t, rid), rejected(rid))
			}
			if res := send(raw(t, r)); !strings.Contains(res[string(rid)], "rejected earlier") {
				t.Fatalf("R again: %v", res)
			}
			// X cites R among its auth events: rejected, remembered.
			x := w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"body": "x"}, []id.EventID{rid}, depth+1, rid)
			xid := w.eventID(t, x)
			// Y and S are built on X; Y and S are fine.
			y := w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"body": "y"}, []id.EventID{xid}, depth+2)
			s := w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"body": "s"}, []id.EventID{w.eventID(t, y)}, depth+3)
			w.remote.calls = 0
			res := send(raw(t, x), raw(t, y), raw(t, s))
			if !strings.Contains(res[string(xid)], "was rejected") || w.stored(t, xid) != nil || !rejected(xid) {
				t.Fatalf("X: %v, remembered %v", res, rejected(xid))
			}
			for _, e := range []id.EventID{w.eventID(t, y), w.eventID(t, s)} {
				if res[string(e)] != "" {
					t.Fatalf("%s: %q", e, res[string(e)])
				}
				if se := w.stored(t, e); se == nil || se.Outlier || se.SoftFailed {
					t.Fatalf("%s stored as %+v", e, se)
				}
			}
			if w.remote.calls != 0 {
				t.Fatalf("get_missing_events asked %d times", w.remote.calls)
			}
			if now, _ := w.head(t); !slices.Contains(now, w.eventID(t, s)) {
				t.Fatalf("extremities %v, want S among them", now)
			}
		})
	}
}
