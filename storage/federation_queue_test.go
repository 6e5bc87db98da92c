package storage_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func fedItems(dest, room string, from, to int64) []storage.FederationQueueItem {
	var out []storage.FederationQueueItem
	for p := from; p <= to; p++ {
		out = append(out, storage.FederationQueueItem{Destination: dest, StreamPos: p, RoomID: room, EventID: fmt.Sprintf("$e%d", p), QueuedTS: p})
	}
	return out
}

// TestFederationQueue: enqueueing is idempotent, acknowledged positions are
// never queued again, a transaction's batch is stable until acknowledged.
func TestFederationQueue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(db.EnqueueFederation(ctx, fedItems("a.test", "!r:x", 1, 60)))
		must(db.EnqueueFederation(ctx, fedItems("a.test", "!r:x", 1, 60))) // a replay
		batch, err := db.FederationBatch(ctx, "a.test", 0, 50)
		must(err)
		if len(batch) != 50 || batch[0].StreamPos != 1 || batch[49].StreamPos != 50 {
			t.Fatalf("first batch: %d items", len(batch))
		}
		must(db.StartFederationTxn(ctx, "a.test", "m50", 50))
		must(db.EnqueueFederation(ctx, fedItems("a.test", "!r:x", 61, 70)))
		if again, _ := db.FederationBatch(ctx, "a.test", 50, 50); len(again) != 50 || again[49].StreamPos != 50 {
			t.Fatalf("retry batch changed: %d items", len(again))
		}
		must(db.FederationTxnFailed(ctx, "a.test", 3, 12345))
		st, err := db.FederationDestinationState(ctx, "a.test")
		must(err)
		if st.Failures != 3 || st.BackoffUntil != 12345 || st.TxnID != "m50" || st.TxnUpto != 50 {
			t.Fatalf("state after failure: %+v", st)
		}
		must(db.AckFederationTxn(ctx, "a.test", 50, 999))
		must(db.EnqueueFederation(ctx, fedItems("a.test", "!r:x", 1, 70))) // a replay after the ack
		batch, err = db.FederationBatch(ctx, "a.test", 0, 50)
		must(err)
		if len(batch) != 20 || batch[0].StreamPos != 51 {
			t.Fatalf("after the ack: %d items from %d", len(batch), batch[0].StreamPos)
		}
		st, _ = db.FederationDestinationState(ctx, "a.test")
		if st.Failures != 0 || st.BackoffUntil != 0 || st.TxnID != "" || st.LastSuccess != 999 || st.AckedUpto != 50 {
			t.Fatalf("state after ack: %+v", st)
		}
		if d, err := db.FederationQueuedDestinations(ctx); err != nil || len(d) != 1 || d[0] != "a.test" {
			t.Fatalf("queued destinations %v %v", d, err)
		}
	})
}

// TestFederationQueueTrim: a 10,000-event outage in one room leaves the
// destination's queue bounded: the transaction in flight whole, and the
// room's latest events.
func TestFederationQueueTrim(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for from := int64(1); from <= 10000; from += 1000 {
			if err := db.EnqueueFederation(ctx, fedItems("b.test", "!big:x", from, from+999)); err != nil {
				t.Fatal(err)
			}
			// The sender trims as it queues for a failing destination; in flight: up to 50.
			if _, err := db.TrimFederationQueue(ctx, "b.test", 50, 1000, 100); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.EnqueueFederation(ctx, fedItems("b.test", "!small:x", 20001, 20010)); err != nil {
			t.Fatal(err)
		}
		if _, err := db.TrimFederationQueue(ctx, "b.test", 50, 1000, 100); err != nil {
			t.Fatal(err)
		}
		_, total, err := db.FederationQueueStats(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if total.Depth != 50+100+10 {
			t.Fatalf("queue depth after a 10,000-event outage: %d, want %d", total.Depth, 160)
		}
		all, err := db.FederationBatch(ctx, "b.test", 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if all[49].StreamPos != 50 || all[50].StreamPos != 9901 || all[149].StreamPos != 10000 || all[150].StreamPos != 20001 {
			t.Fatalf("kept %d..%d, %d..%d, then %d", all[0].StreamPos, all[49].StreamPos, all[50].StreamPos, all[149].StreamPos, all[150].StreamPos)
		}
	})
}
