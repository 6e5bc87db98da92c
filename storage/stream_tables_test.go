package storage_test

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

// Rows written at a stream position (by any area) keep the stream above
// that position across a restart: each area's table counts when the stream
// resumes, even past the reserved high-water mark.
func TestStreamResumesAboveEveryAreasRows(t *testing.T) {
	ctx := context.Background()
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			url := storeURL(t, backend)
			open := func() *storage.DB {
				t.Helper()
				db, err := storage.Open(ctx, url, 2)
				must(t, err)
				return db
			}
			db := open()
			createUser(t, db, "@b:x")
			login(t, db, "@b:x", "B", "", "tok", "")
			db.Close()
			pos := int64(1_000_000)
			for _, w := range []struct {
				area  string
				write func(db *storage.DB, pos int64) error
			}{
				{"account data", func(db *storage.DB, pos int64) error {
					return db.PutAccountData(ctx, "@a:x", "", "m.t", []byte(`{}`), pos)
				}},
				{"receipts", func(db *storage.DB, pos int64) error {
					return db.UpsertReceipt(ctx, storage.Receipt{RoomID: "!r:x", UserID: "@a:x", Type: "m.read", EventID: "$e", Pos: pos})
				}},
				{"presence", func(db *storage.DB, pos int64) error {
					return db.SetPresence(ctx, storage.Presence{UserID: "@a:x", State: "online", Pos: pos})
				}},
				{"push rules", func(db *storage.DB, pos int64) error {
					return db.UpdatePushRules(ctx, "@a:x", pos, func(string) (string, error) { return "{}", nil })
				}},
				{"device lists", func(db *storage.DB, pos int64) error { return db.MarkDeviceListChanged(ctx, "@a:x", pos) }},
				{"to-device", func(db *storage.DB, pos int64) error {
					_, _, err := db.SendToDevice(ctx, "@a:x", "A", "txn"+string(rune('a'+pos%26)), []storage.ToDeviceMessage{{UserID: "@b:x", DeviceID: "B", Type: "m.t", Content: []byte("{}")}}, pos, 1, 10)
					return err
				}},
			} {
				pos += 10_000 // beyond what any earlier run reserved
				db := open()
				if err := w.write(db, pos); err != nil {
					t.Fatalf("%s: %v", w.area, err)
				}
				db.Close()
				db = open()
				cur := db.Stream.Current()
				db.Close()
				if cur < pos {
					t.Fatalf("after a %s row at %d the stream resumed at %d", w.area, pos, cur)
				}
			}
		})
	}
}
