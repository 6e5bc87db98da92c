package roomview

import (
	"context"
	"log/slog"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// RemoteTimestamps asks the room's other servers for the event closest to
// ts (federation timestamp_to_event) and backfills it into the room's
// timeline (package backfill); the event is then read from the store.
// roomview never calls the network itself.
type RemoteTimestamps interface {
	EventNearTimestamp(ctx context.Context, roomID id.RoomID, ts int64, forwards bool) (id.EventID, error)
}

// remoteTimestampTimeout bounds how long one timestamp_to_event waits for
// other servers (the lookups and the backfill that follows).
const remoteTimestampTimeout = 20 * time.Second

// timestampNearRemote asks other servers, as Synapse does, when the local
// answer local (nil: none) may not be the closest: there is none, or, looking
// forwards, it follows a gap (some prev_events not stored: the history just
// before it, closer to ts, is on other servers). Looking backwards a stored
// event is kept: the server receives the room's new events while joined.
// The remote event is taken only when it is stored in the room's timeline
// (backfilled), lies in the asked direction, the user may see it, and it is
// closer to ts than local. A failure is logged and local stands.
func (s *Service) timestampNearRemote(ctx context.Context, v *viewer, roomID id.RoomID, ts int64, forwards bool, local *storage.Event) *storage.Event {
	if s.timestamps == nil {
		return nil
	}
	if local != nil {
		if !forwards {
			return nil
		}
		gaps, err := s.gapsIn(ctx, []*storage.Event{local})
		if err != nil || !gaps[local.EventID] {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, remoteTimestampTimeout)
	defer cancel()
	evID, err := s.timestamps.EventNearTimestamp(ctx, roomID, ts, forwards)
	if err != nil {
		slog.Info("timestamp_to_event: asking other servers failed", "room", roomID, "err", err)
		return nil
	}
	se, err := s.db.GetEvent(ctx, string(evID))
	// An outlier has no place in the timeline to read around.
	if err != nil || se.RoomID != string(roomID) || se.SoftFailed || se.Outlier {
		return nil
	}
	if (forwards && se.OriginServerTS < ts) || (!forwards && se.OriginServerTS > ts) || !v.canSee(se.StreamPos) {
		return nil
	}
	if local != nil && abs(se.OriginServerTS-ts) >= abs(local.OriginServerTS-ts) {
		return nil
	}
	return se
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
