package mediaapi

import (
	"context"
	"fmt"
)

// Delete removes a media item (a local upload or a cached copy of another
// server's), its thumbnails and the blobs no other row names; afterwards the
// item answers 404. The retention purge calls it for media only purged
// events named. The blob store's gc lock is held across the store's
// reference check and the deletion, as in the remote cache's eviction.
func (s *Service) Delete(ctx context.Context, origin, mediaID string) error {
	s.blobs.gc.Lock()
	defer s.blobs.gc.Unlock()
	orphans, err := s.store.DeleteMedia(ctx, origin, mediaID)
	if err != nil {
		return err
	}
	for _, sum := range orphans {
		if err := s.blobs.remove(sum); err != nil {
			return fmt.Errorf("deleting media %s/%s: %w", origin, mediaID, err)
		}
	}
	return nil
}
