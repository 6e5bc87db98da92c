package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// The remote media cache: rows flagged remote, LRU order by last access,
// size including generated thumbnails, and eviction returning only blobs no
// other row (local media, thumbnails) still names.
func TestRemoteMediaCache(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		sha := func(c byte) string { return string(slices.Repeat([]byte{c}, 64)) }
		remote := func(id string, sum byte, size, ts int64) {
			t.Helper()
			must(t, db.InsertRemoteMedia(ctx, storage.MediaRow{Origin: "there.example", MediaID: id, ContentType: "image/png",
				Size: size, SHA256: sha(sum), CreatedTS: ts, UploadedTS: ts}))
		}
		remote("old", 'a', 100, 1000)
		remote("shared", 'b', 200, 2000)
		remote("new", 'c', 300, 3000)
		remote("new", 'c', 999, 9999) // a second insert of the same item is a no-op
		must(t, db.InsertMedia(ctx, storage.MediaRow{Origin: "here.example", MediaID: "local", Uploader: "@u:here.example",
			ContentType: "text/plain", Size: 200, SHA256: sha('b'), CreatedTS: 1, UploadedTS: 1}, 0))
		must(t, db.PutMediaThumbnail(ctx, storage.MediaThumbnail{Origin: "there.example", MediaID: "old", Width: 32, Height: 32,
			Method: "scale", ContentType: "image/png", Size: 10, SHA256: sha('d'), CreatedTS: 1}))
		// A thumbnail that is the original itself is not counted twice.
		must(t, db.PutMediaThumbnail(ctx, storage.MediaThumbnail{Origin: "there.example", MediaID: "old", Width: 96, Height: 96,
			Method: "scale", ContentType: "image/png", Size: 100, SHA256: sha('a'), CreatedTS: 1}))

		total, err := db.RemoteMediaBytes(ctx)
		must(t, err)
		if total != 100+200+300+10 {
			t.Fatalf("remote cache size %d, want 610", total)
		}
		// Touching within the granularity writes nothing; after it, moves the item.
		must(t, db.TouchRemoteMedia(ctx, "there.example", "old", 1500, 1000))
		lru, err := db.LeastRecentlyUsedRemoteMedia(ctx, 10)
		must(t, err)
		if len(lru) != 3 || lru[0].MediaID != "old" {
			t.Fatalf("LRU order %v", lru)
		}
		must(t, db.TouchRemoteMedia(ctx, "there.example", "old", 5000, 1000))
		must(t, db.TouchRemoteMedia(ctx, "here.example", "local", 5000, 1000)) // local media has no LRU position
		lru, err = db.LeastRecentlyUsedRemoteMedia(ctx, 10)
		must(t, err)
		if len(lru) != 3 || lru[0].MediaID != "shared" || lru[1].MediaID != "new" || lru[2].MediaID != "old" {
			t.Fatalf("LRU order after touch %v", lru)
		}

		orphans, err := db.DeleteRemoteMedia(ctx, "there.example", "shared")
		must(t, err)
		if len(orphans) != 0 {
			t.Fatalf("blob shared with a local upload reported orphaned: %v", orphans)
		}
		orphans, err = db.DeleteRemoteMedia(ctx, "there.example", "old")
		must(t, err)
		slices.Sort(orphans)
		if !slices.Equal(orphans, []string{sha('a'), sha('d')}) {
			t.Fatalf("orphans %v", orphans)
		}
		if _, err := db.GetMediaThumbnail(ctx, "there.example", "old", 32, 32, "scale", false); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("evicted item's thumbnail kept: %v", err)
		}
		if _, err := db.GetMedia(ctx, "here.example", "local"); err != nil {
			t.Fatalf("local upload gone: %v", err)
		}
		// Local media is never deleted as remote.
		orphans, err = db.DeleteRemoteMedia(ctx, "here.example", "local")
		must(t, err)
		if _, err := db.GetMedia(ctx, "here.example", "local"); err != nil || len(orphans) != 0 {
			t.Fatalf("DeleteRemoteMedia touched local media: %v %v", err, orphans)
		}
		total, err = db.RemoteMediaBytes(ctx)
		must(t, err)
		if total != 300 {
			t.Fatalf("remote cache size after eviction %d, want 300", total)
		}
	})
}
