package storage_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func toDeviceIDs(t *testing.T, db *storage.DB, user, device string, after int64, limit int) []string {
	t.Helper()
	msgs, err := db.ToDeviceSince(context.Background(), user, device, after, limit)
	must(t, err)
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%s@%d", m.Content, m.StreamPos))
	}
	return out
}

func TestSendToDevice(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		createUser(t, db, "@a:x")
		createUser(t, db, "@b:x")
		login(t, db, "@b:x", "B1", "", "tb1", "")
		login(t, db, "@b:x", "B2", "", "tb2", "")
		send := func(txn string, pos int64, msgs ...storage.ToDeviceMessage) ([]string, bool) {
			t.Helper()
			delivered, dup, err := db.SendToDevice(ctx, "@a:x", "A", txn, msgs, pos, 1000, 100)
			must(t, err)
			return delivered, dup
		}
		msg := func(user, device, content string) storage.ToDeviceMessage {
			return storage.ToDeviceMessage{UserID: user, DeviceID: device, Sender: "@a:x", Type: "m.test", Content: []byte(content)}
		}
		delivered, dup := send("t1", 10, msg("@b:x", "B1", "one"), msg("@b:x", "NOPE", "lost"), msg("@nobody:x", "X", "lost"))
		if dup || !slices.Equal(delivered, []string{"@b:x"}) {
			t.Fatalf("first send: delivered %v, dup %v", delivered, dup)
		}
		// The same transaction again stores nothing.
		if delivered, dup := send("t1", 11, msg("@b:x", "B1", "again")); !dup || delivered != nil {
			t.Fatalf("retried transaction: delivered %v, dup %v", delivered, dup)
		}
		// "*" reaches every device of the user.
		send("t2", 12, msg("@b:x", "*", "all"))
		if got := toDeviceIDs(t, db, "@b:x", "B1", 0, 10); !slices.Equal(got, []string{"one@10", "all@12"}) {
			t.Fatalf("B1 has %v", got)
		}
		if got := toDeviceIDs(t, db, "@b:x", "B2", 0, 10); !slices.Equal(got, []string{"all@12"}) {
			t.Fatalf("B2 has %v", got)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM to_device_messages WHERE user_id <> '@b:x' OR device_id NOT IN ('B1', 'B2')`); n != 0 {
			t.Fatalf("%d messages stored for targets that are not devices", n)
		}
		// after and limit.
		if got := toDeviceIDs(t, db, "@b:x", "B1", 10, 10); !slices.Equal(got, []string{"all@12"}) {
			t.Fatalf("B1 after 10: %v", got)
		}
		if got := toDeviceIDs(t, db, "@b:x", "B1", 0, 1); !slices.Equal(got, []string{"one@10"}) {
			t.Fatalf("B1 limit 1: %v", got)
		}
		// Acknowledging deletes at and below the position, for that device only.
		must(t, db.DeleteToDeviceUpTo(ctx, "@b:x", "B1", 12))
		if got := toDeviceIDs(t, db, "@b:x", "B1", 0, 10); len(got) != 0 {
			t.Fatalf("B1 after acknowledging: %v", got)
		}
		if got := toDeviceIDs(t, db, "@b:x", "B2", 0, 10); len(got) != 1 {
			t.Fatalf("acknowledging on B1 deleted B2's messages: %v", got)
		}
		// Deleting the device's keys drops its queue.
		_, err := db.DeleteDeviceKeys(ctx, "@b:x", []string{"B2"}, 13)
		must(t, err)
		if got := toDeviceIDs(t, db, "@b:x", "B2", 0, 10); len(got) != 0 {
			t.Fatalf("a deleted device kept its messages: %v", got)
		}
	})
}

// A device's queue is bounded: past maxPending the oldest messages go.
func TestSendToDeviceBoundsQueue(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		createUser(t, db, "@b:x")
		login(t, db, "@b:x", "B1", "", "tb1", "")
		for i := range 5 {
			_, _, err := db.SendToDevice(ctx, "@a:x", "A", fmt.Sprint("t", i),
				[]storage.ToDeviceMessage{{UserID: "@b:x", DeviceID: "B1", Sender: "@a:x", Type: "m.t", Content: []byte(fmt.Sprint("m", i))}},
				int64(10+i), 1000, 3)
			must(t, err)
		}
		if got := toDeviceIDs(t, db, "@b:x", "B1", 0, 10); !slices.Equal(got, []string{"m2@12", "m3@13", "m4@14"}) {
			t.Fatalf("queue holds %v, want the newest three", got)
		}
	})
}

// Transaction IDs are remembered per sending device, and forgotten once a
// later send of that device finds them more than a day old.
func TestSendToDeviceTxnScope(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		createUser(t, db, "@b:x")
		login(t, db, "@b:x", "B1", "", "tb1", "")
		m := []storage.ToDeviceMessage{{UserID: "@b:x", DeviceID: "B1", Sender: "@a:x", Type: "m.t", Content: []byte("x")}}
		day := int64(24 * 3600 * 1000)
		for i, c := range []struct {
			device, txn string
			now         int64
			wantDup     bool
		}{
			{"A1", "old", 1000, false},
			{"A1", "old", 2000, true},          // same device, same ID
			{"A2", "old", 3000, false},         // another device of the sender
			{"A1", "new", 1000 + 2*day, false}, // sweeps A1's IDs older than a day
			{"A1", "old", 1000 + 2*day, false}, // forgotten
			{"A2", "old", 1000 + 2*day, true},  // A2's is not swept by A1's sends
		} {
			_, dup, err := db.SendToDevice(ctx, "@a:x", c.device, c.txn, m, int64(10+i), c.now, 100)
			must(t, err)
			if dup != c.wantDup {
				t.Fatalf("send %d (%s %s at %d): dup %v, want %v", i, c.device, c.txn, c.now, dup, c.wantDup)
			}
		}
	})
}
