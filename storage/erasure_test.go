package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

// Erasure in the store: DeactivateUser with erase records the user (kept
// across a reopen), without erase does not; EraseUploads marks the user's
// uploads erased (GetMedia ErrNotFound), drops their thumbnails and returns
// only the blobs no other row names; the pass over every erased user finds
// nothing left to do.
func TestErasure(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			url := storeURL(t, backend)
			db, err := storage.Open(ctx, url, 4)
			must(t, err)
			sha := func(c byte) string { return string(slices.Repeat([]byte{c}, 64)) }
			for _, u := range []string{"@erased:here", "@kept:here"} {
				must(t, db.CreateUser(ctx, storage.User{UserID: u, Localpart: u[1:6], CreatedTS: 1}))
			}
			upload := func(id, uploader string, sum byte) {
				must(t, db.InsertMedia(ctx, storage.MediaRow{Origin: "here", MediaID: id, Uploader: uploader, ContentType: "image/png",
					Size: 10, SHA256: sha(sum), CreatedTS: 1, UploadedTS: 1}, 0))
			}
			upload("own", "@erased:here", 'a')
			upload("shared", "@erased:here", 'b')
			upload("other", "@kept:here", 'b') // same content as "shared"
			must(t, db.PutMediaThumbnail(ctx, storage.MediaThumbnail{Origin: "here", MediaID: "own", Width: 32, Height: 32,
				Method: "scale", ContentType: "image/png", Size: 3, SHA256: sha('c'), CreatedTS: 1}))

			_, err = db.DeactivateUser(ctx, "@kept:here", false)
			must(t, err)
			_, err = db.DeactivateUser(ctx, "@erased:here", true)
			must(t, err)
			orphans, n, err := db.EraseUploads(ctx, "@erased:here", 5)
			must(t, err)
			slices.Sort(orphans)
			if n != 2 || !slices.Equal(orphans, []string{sha('a'), sha('c')}) {
				t.Errorf("EraseUploads: %d uploads, orphans %v; want 2 and the blobs a and c (b is still named)", n, orphans)
			}
			for _, id := range []string{"own", "shared"} {
				if _, err := db.GetMedia(ctx, "here", id); !errors.Is(err, storage.ErrNotFound) {
					t.Errorf("GetMedia(%s) after erasure: %v", id, err)
				}
			}
			if _, err := db.GetMediaThumbnail(ctx, "here", "own", 32, 32, "scale", false); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("thumbnail after erasure: %v", err)
			}
			if m, err := db.GetMedia(ctx, "here", "other"); err != nil || m.SHA256 != sha('b') {
				t.Errorf("another user's upload: %v %v", m, err)
			}
			db.Close()

			db, err = storage.Open(ctx, url, 4)
			must(t, err)
			defer db.Close()
			erased, err := db.ErasedUsers(ctx, []string{"@erased:here", "@kept:here", "@nobody:here"})
			must(t, err)
			if !erased["@erased:here"] || len(erased) != 1 {
				t.Errorf("ErasedUsers after reopening: %v", erased)
			}
			if orphans, n, err := db.EraseUploads(ctx, "", 6); err != nil || n != 0 || len(orphans) != 0 {
				t.Errorf("the pass over every erased user: %d, %v, %v", n, orphans, err)
			}
		})
	}
}
