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

// The cache's running total (what the budget check reads) equals the sum of
// its rows after every kind of change: inserts, thumbnails (the original
// itself not counted twice), a placeholder filled in, evictions, and a
// thumbnail of local media (never counted).
func TestRemoteMediaCacheRunningTotal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		sha := func(c byte) string { return string(slices.Repeat([]byte{c}, 64)) }
		check := func(step string, want int64) {
			t.Helper()
			total, err := db.RemoteMediaBytes(ctx)
			must(t, err)
			sum, err := db.SumRemoteMediaBytes(ctx)
			must(t, err)
			if total != sum || total != want {
				t.Fatalf("%s: running total %d, sum of rows %d, want %d", step, total, sum, want)
			}
		}
		thumb := func(id string, w int, sum byte, size int64) {
			t.Helper()
			must(t, db.PutMediaThumbnail(ctx, storage.MediaThumbnail{Origin: "there.example", MediaID: id, Width: w, Height: w,
				Method: "scale", ContentType: "image/png", Size: size, SHA256: sha(sum), CreatedTS: 1}))
		}
		check("empty", 0)
		must(t, db.InsertRemoteMedia(ctx, storage.MediaRow{Origin: "there.example", MediaID: "a", ContentType: "image/png",
			Size: 1000, SHA256: sha('a'), CreatedTS: 1, UploadedTS: 1}))
		must(t, db.InsertRemoteMedia(ctx, storage.MediaRow{Origin: "there.example", MediaID: "a", ContentType: "image/png",
			Size: 5, SHA256: sha('a'), CreatedTS: 2, UploadedTS: 2}))
		check("insert", 1000)
		thumb("a", 32, 't', 40)
		thumb("a", 32, 't', 40) // the same thumbnail again: not counted twice
		thumb("a", 96, 'a', 1000)
		check("thumbnails", 1040)

		// A video's thumbnail fetched from its server before (or without) the original.
		must(t, db.InsertRemoteMediaPlaceholder(ctx, "there.example", "v", 5))
		check("placeholder", 1040)
		thumb("v", 32, 'p', 70)
		thumb("v", 96, 'q', 80)
		check("placeholder thumbnails", 1190)
		if m, err := db.GetMedia(ctx, "there.example", "v"); err != nil || m.SHA256 != "" {
			t.Fatalf("placeholder row %+v %v", m, err)
		}
		// The original arrives; its thumbnail identical to it (q) stops counting.
		must(t, db.InsertRemoteMedia(ctx, storage.MediaRow{Origin: "there.example", MediaID: "v", ContentType: "video/mp4",
			Size: 80, SHA256: sha('q'), CreatedTS: 6, UploadedTS: 6}))
		check("placeholder filled", 1040+80+70)
		if m, err := db.GetMedia(ctx, "there.example", "v"); err != nil || m.SHA256 != sha('q') || m.ContentType != "video/mp4" {
			t.Fatalf("filled placeholder %+v %v", m, err)
		}
		must(t, db.InsertRemoteMediaPlaceholder(ctx, "there.example", "v", 7)) // no-op on a cached item
		check("placeholder over cached", 1190)

		must(t, db.InsertMedia(ctx, storage.MediaRow{Origin: "here.example", MediaID: "l", Uploader: "@u:here.example",
			ContentType: "image/png", Size: 500, SHA256: sha('l'), CreatedTS: 1, UploadedTS: 1}, 0))
		must(t, db.PutMediaThumbnail(ctx, storage.MediaThumbnail{Origin: "here.example", MediaID: "l", Width: 32, Height: 32,
			Method: "scale", ContentType: "image/png", Size: 9, SHA256: sha('m'), CreatedTS: 1}))
		check("local media", 1190)

		_, err := db.DeleteRemoteMedia(ctx, "there.example", "a")
		must(t, err)
		check("evict a", 150)
		_, err = db.DeleteRemoteMedia(ctx, "there.example", "a") // gone already
		must(t, err)
		_, err = db.DeleteRemoteMedia(ctx, "here.example", "l") // local: untouched
		must(t, err)
		check("evict again", 150)
		_, err = db.DeleteRemoteMedia(ctx, "there.example", "v")
		must(t, err)
		check("evict v", 0)

		// The recount (startup repair) agrees with the sum.
		must(t, db.InsertRemoteMedia(ctx, storage.MediaRow{Origin: "there.example", MediaID: "b", ContentType: "image/png",
			Size: 33, SHA256: sha('b'), CreatedTS: 1, UploadedTS: 1}))
		if n, err := db.RecountRemoteMediaBytes(ctx); err != nil || n != 33 {
			t.Fatalf("recount %d %v", n, err)
		}
		check("recount", 33)
	})
}

// TestRetentionDeleteRemoteMedia: the retention purge's DeleteMedia of a
// cached remote item takes it out of the remote cache's running total (and
// of a local upload leaves the total alone).
func TestRetentionDeleteRemoteMedia(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		sha := func(c byte) string { return string(slices.Repeat([]byte{c}, 64)) }
		must(t, db.InsertRemoteMedia(ctx, storage.MediaRow{Origin: "there.example", MediaID: "r", ContentType: "image/png",
			Size: 700, SHA256: sha('r'), CreatedTS: 1, UploadedTS: 1}))
		must(t, db.InsertMedia(ctx, storage.MediaRow{Origin: "here.example", MediaID: "l", Uploader: "@u:here.example",
			ContentType: "image/png", Size: 300, SHA256: sha('l'), CreatedTS: 1, UploadedTS: 1}, 0))
		for _, m := range [][2]string{{"here.example", "l"}, {"there.example", "r"}} {
			orphans, err := db.DeleteMedia(ctx, m[0], m[1])
			must(t, err)
			if len(orphans) != 1 {
				t.Fatalf("deleting %s: orphans %v", m, orphans)
			}
		}
		total, err := db.RemoteMediaBytes(ctx)
		must(t, err)
		sum, err := db.SumRemoteMediaBytes(ctx)
		must(t, err)
		if total != 0 || sum != 0 {
			t.Fatalf("after the purge: running total %d, sum %d", total, sum)
		}
	})
}
