package syncv2

import (
	"context"
	"encoding/json"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/visibility"
)

// roomViewer applies the room's history visibility for the syncing user,
// exactly as /messages does (visibility.History). The user's
// membership history comes with the sync's membership read; the room's
// history_visibility changes are read only when some event was sent while the
// user was not joined (never in the common incremental case).
type roomViewer struct {
	roomID string
	hv     visibility.History
	loaded bool // hv.Visibility read
	left   bool // a room the user left: its state ends at their leave
	// hidTail: the timeline's filter or history visibility left events out,
	// so some may follow its last event; without, it ends at the range's end.
	hidTail bool
}

func (s *Syncer) roomViewer(roomID string, m *roomMembership) *roomViewer {
	return &roomViewer{roomID: roomID, hv: visibility.History{Memberships: m.history}}
}

// canSee reports whether the user may see the event at pos.
func (s *Syncer) canSee(ctx context.Context, v *roomViewer, pos int64) (bool, error) {
	if v.hv.JoinedAt(pos) {
		return true, nil
	}
	if !v.loaded {
		vis, err := s.store.HistoryVisibilityChanges(ctx, v.roomID)
		if err != nil {
			return false, err
		}
		v.hv.Visibility, v.loaded = vis, true
	}
	return v.hv.CanSee(pos), nil
}

// visible keeps the events the user may see; dropped reports whether any was left out.
func (s *Syncer) visible(ctx context.Context, v *roomViewer, evs []*storage.Event) (kept []*storage.Event, dropped bool, err error) {
	kept = evs[:0:0]
	for _, e := range evs {
		ok, err := s.canSee(ctx, v, e.StreamPos)
		if err != nil {
			return nil, false, err
		}
		if ok {
			kept = append(kept, e)
		}
	}
	return kept, len(kept) < len(evs), nil
}

// render converts events for the requesting device (clientevent.Render):
// with prev_content of state events whose replaced event the user may see
// and the user's membership at each event (unsigned.membership).
func (s *Syncer) render(ctx context.Context, req *Request, v *roomViewer, evs []*storage.Event) ([]json.RawMessage, error) {
	return clientevent.Render(ctx, s.store, &clientevent.Viewer{UserID: req.UserID, DeviceID: req.DeviceID,
		MembershipAt: v.hv.MembershipAt, CanSee: func(pos int64) (bool, error) { return s.canSee(ctx, v, pos) }}, evs)
}
