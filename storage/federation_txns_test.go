package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestFederationTxns: results round-trip, a second record keeps the first,
// other origins are separate, and the window trims by age and by count.
func TestFederationTxns(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := db.GetFederationTxn(ctx, "a.test", "t1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown txn: %v", err)
		}
		want := map[string]string{"$a": "", "$b": "room not found"}
		if err := db.PutFederationTxn(ctx, "a.test", "t1", want, 1000, 0, 10); err != nil {
			t.Fatal(err)
		}
		if err := db.PutFederationTxn(ctx, "a.test", "t1", map[string]string{"$c": ""}, 1001, 0, 10); err != nil {
			t.Fatal(err)
		}
		got, err := db.GetFederationTxn(ctx, "a.test", "t1")
		if err != nil || len(got) != 2 || got["$b"] != "room not found" || got["$a"] != "" {
			t.Fatalf("results = %v, %v", got, err)
		}
		if _, err := db.GetFederationTxn(ctx, "b.test", "t1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("other origin sees the txn: %v", err)
		}
		// Count: only the newest 3 of a.test survive.
		for i := 2; i <= 5; i++ {
			if err := db.PutFederationTxn(ctx, "a.test", fmt.Sprintf("t%d", i), map[string]string{}, int64(1000+i*10), 0, 3); err != nil {
				t.Fatal(err)
			}
		}
		for i, alive := range map[int]bool{1: false, 2: false, 3: true, 4: true, 5: true} {
			_, err := db.GetFederationTxn(ctx, "a.test", fmt.Sprintf("t%d", i))
			if alive != (err == nil) {
				t.Fatalf("t%d: alive=%v, err %v", i, alive, err)
			}
		}
		// Age: everything before minTS goes.
		if err := db.PutFederationTxn(ctx, "a.test", "t6", map[string]string{}, 5000, 1045, 100); err != nil {
			t.Fatal(err)
		}
		for i, alive := range map[int]bool{3: false, 4: false, 5: true, 6: true} {
			_, err := db.GetFederationTxn(ctx, "a.test", fmt.Sprintf("t%d", i))
			if alive != (err == nil) {
				t.Fatalf("after age trim t%d: alive=%v, err %v", i, alive, err)
			}
		}
	})
}
