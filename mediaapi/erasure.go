package mediaapi

import (
	"context"
	"fmt"
	"log/slog"
)

// EraseUserMedia erases the local uploads of a user who deactivated with
// erase: true (userID "": of every erased user, which New runs to finish an
// erasure a crash interrupted): the rows are marked erased (downloads and
// thumbnails 404), thumbnails dropped, and the blobs no other row names
// deleted. The blob store's gc lock is held across the store's reference
// check and the deletion, as for evicted remote media.
func (s *Service) EraseUserMedia(ctx context.Context, userID string) error {
	s.blobs.gc.Lock()
	defer s.blobs.gc.Unlock()
	orphans, n, err := s.store.EraseUploads(ctx, userID, s.now().UnixMilli())
	if err != nil {
		return err
	}
	for _, sum := range orphans {
		if err := s.blobs.remove(sum); err != nil {
			return fmt.Errorf("erasing media: %w", err)
		}
	}
	if n > 0 {
		slog.InfoContext(ctx, "erased media", "user_id", userID, "uploads", n, "blobs", len(orphans))
	}
	return nil
}
