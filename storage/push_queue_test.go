package storage_test

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestPushQueue: pushes queue once per dedup key, come back per gateway in
// order, finish, and are pruned; a deleted pusher's pending pushes are never
// handed out; RoomPushers lists the pushers of a room's joined members.
func TestPushQueue(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		for _, u := range []string{"@a:x", "@b:x"} {
			must(t, db.SetPusher(ctx, storage.Pusher{UserID: u, AppID: "app", PushKey: "k" + u, JSON: `{}`}, true))
		}
		item := func(user, dedup, url string) storage.PushQueueItem {
			return storage.PushQueueItem{UserID: user, AppID: "app", PushKey: "k" + user, URL: url, Dedup: dedup, Body: dedup, QueuedTS: 1}
		}
		must(t, db.EnqueuePushes(ctx, []storage.PushQueueItem{item("@a:x", "1", "g1"), item("@b:x", "2", "g1"), item("@a:x", "3", "g2")}))
		must(t, db.EnqueuePushes(ctx, []storage.PushQueueItem{item("@a:x", "1", "g1"), item("@a:x", "4", "g1")})) // 1 again: ignored
		got, err := db.PendingPushes(ctx, "g1", 10)
		must(t, err)
		if len(got) != 3 || got[0].Body != "1" || got[1].Body != "2" || got[2].Body != "4" {
			t.Fatalf("pending g1 = %+v", got)
		}
		if n, err := db.PushQueueDepth(ctx); err != nil || n != 4 {
			t.Fatalf("depth = %d, %v", n, err)
		}
		must(t, db.FinishPushes(ctx, []int64{got[0].ID}, "sent", 100))
		must(t, db.DeletePusher(ctx, "@b:x", "app", "k@b:x"))
		got, err = db.PendingPushes(ctx, "g1", 10)
		must(t, err)
		if len(got) != 1 || got[0].Body != "4" {
			t.Fatalf("pending g1 after a send and a deleted pusher = %+v", got)
		}
		must(t, db.DeletePushersByKey(ctx, "app", "k@a:x", 100))
		if gws, err := db.PendingPushGateways(ctx); err != nil || len(gws) != 0 {
			t.Fatalf("gateways after the rejection = %v, %v", gws, err)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM push_queue WHERE result = 'gone'`); n != 3 {
			t.Fatalf("gone = %d, want 3", n)
		}
		must(t, db.PrunePushQueue(ctx, 1<<62))
		if n := countRows(t, db, `SELECT COUNT(*) FROM push_queue`); n != 0 {
			t.Fatalf("%d rows after pruning", n)
		}
	})
}
