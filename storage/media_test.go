package storage_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func TestMediaQuota(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.GetMedia(ctx, "x", "missing")
		wantNotFound(t, "missing media", err)
		row := func(id, uploader string, size int64) storage.MediaRow {
			return storage.MediaRow{Origin: "x", MediaID: id, Uploader: uploader, ContentType: "text/plain", Size: size,
				Filename: "f.txt", SHA256: "sha-" + id, CreatedTS: 1, UploadedTS: 2}
		}
		must(t, db.InsertMedia(ctx, row("m1", "@a:x", 60), 100))
		if err := db.InsertMedia(ctx, row("m2", "@a:x", 41), 100); !errors.Is(err, storage.ErrMediaQuota) {
			t.Fatalf("upload past the quota: %v", err)
		}
		_, err = db.GetMedia(ctx, "x", "m2")
		wantNotFound(t, "media refused for quota", err)
		must(t, db.InsertMedia(ctx, row("m3", "@a:x", 40), 100))  // exactly at the quota
		must(t, db.InsertMedia(ctx, row("m4", "@b:x", 100), 100)) // quotas are per uploader
		must(t, db.InsertMedia(ctx, row("m5", "@a:x", 1000), 0))  // 0: unlimited
		if used, err := db.MediaUsage(ctx, "@a:x"); err != nil || used != 1100 {
			t.Fatalf("MediaUsage = %d, %v", used, err)
		}
		m, err := db.GetMedia(ctx, "x", "m1")
		if err != nil || m.Uploader != "@a:x" || m.Size != 60 || m.SHA256 != "sha-m1" || m.Filename != "f.txt" || m.ContentType != "text/plain" {
			t.Fatalf("GetMedia = %+v, %v", m, err)
		}
		if err := db.InsertMedia(ctx, row("m1", "@b:x", 1), 0); err == nil {
			t.Fatal("a media ID was inserted twice")
		}
	})
}

// Concurrent uploads of one uploader cannot together exceed the quota.
func TestMediaQuotaConcurrent(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for i := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.InsertMedia(ctx, storage.MediaRow{Origin: "x", MediaID: string(rune('a' + i)), Uploader: "@a:x", Size: 40, SHA256: "s"}, 100)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, storage.ErrMediaQuota):
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if used, _ := db.MediaUsage(ctx, "@a:x"); ok != 2 || used != 80 {
			t.Fatalf("%d uploads of 40 bytes accepted under a quota of 100 (%d bytes used)", ok, used)
		}
	})
}

func TestPendingMedia(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		create := func(id string, now, expires int64) bool {
			t.Helper()
			ok, err := db.CreatePendingMedia(ctx, "x", id, "@a:x", now, expires, 2)
			must(t, err)
			return ok
		}
		if !create("p1", 10, 100) || !create("p2", 10, 50) {
			t.Fatal("pending IDs under the limit refused")
		}
		if create("p3", 20, 200) {
			t.Fatal("a third pending ID accepted over a limit of 2")
		}
		if ok, err := db.CreatePendingMedia(ctx, "x", "b1", "@b:x", 20, 200, 2); !ok || err != nil {
			t.Fatalf("another uploader's pending ID refused: %v %v", ok, err)
		}
		// p2 expired at 50: it is swept, making room.
		if !create("p4", 60, 300) {
			t.Fatal("expired pending IDs still count")
		}
		_, err := db.GetMedia(ctx, "x", "p2")
		wantNotFound(t, "an expired pending ID", err)

		complete := func(id, uploader string, size, at, quota int64) error {
			return db.CompletePendingMedia(ctx, storage.MediaRow{Origin: "x", MediaID: id, Uploader: uploader, ContentType: "image/png",
				Size: size, SHA256: "sha-" + id, UploadedTS: at}, quota)
		}
		wantNotFound(t, "completing a missing ID", complete("nope", "@a:x", 1, 70, 0))
		wantNotFound(t, "completing another user's ID", complete("p1", "@b:x", 1, 70, 0))
		wantNotFound(t, "completing an expired ID", complete("p1", "@a:x", 1, 100, 0))
		if err := complete("p1", "@a:x", 500, 70, 100); !errors.Is(err, storage.ErrMediaQuota) {
			t.Fatalf("completing past the quota: %v", err)
		}
		must(t, complete("p1", "@a:x", 5, 70, 100))
		if err := complete("p1", "@a:x", 5, 71, 100); !errors.Is(err, storage.ErrMediaUploaded) {
			t.Fatalf("completing twice: %v", err)
		}
		m, err := db.GetMedia(ctx, "x", "p1")
		if err != nil || m.SHA256 != "sha-p1" || m.UploadedTS != 70 || m.ExpiresTS != 0 || m.ContentType != "image/png" {
			t.Fatalf("completed media = %+v, %v", m, err)
		}
		// A completed ID no longer counts as pending.
		if !create("p5", 80, 400) {
			t.Fatal("a completed ID still counts as pending")
		}
	})
}

func TestMediaThumbnails(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.GetMediaThumbnail(ctx, "x", "m", 32, 32, "crop", false)
		wantNotFound(t, "missing thumbnail", err)
		th := storage.MediaThumbnail{Origin: "x", MediaID: "m", Width: 32, Height: 32, Method: "crop", ContentType: "image/png", Size: 10, SHA256: "first", CreatedTS: 1}
		must(t, db.PutMediaThumbnail(ctx, th))
		th.SHA256 = "second"
		must(t, db.PutMediaThumbnail(ctx, th)) // the first one stays
		got, err := db.GetMediaThumbnail(ctx, "x", "m", 32, 32, "crop", false)
		if err != nil || got.SHA256 != "first" || got.Size != 10 {
			t.Fatalf("GetMediaThumbnail = %+v, %v", got, err)
		}
		for _, c := range []struct {
			w, h     int
			method   string
			animated bool
		}{{32, 32, "scale", false}, {32, 32, "crop", true}, {64, 32, "crop", false}} {
			_, err := db.GetMediaThumbnail(ctx, "x", "m", c.w, c.h, c.method, c.animated)
			wantNotFound(t, "a thumbnail of other parameters", err)
		}
	})
}
