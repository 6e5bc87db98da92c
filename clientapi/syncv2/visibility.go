package syncv2

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/push"
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
func (s *Syncer) visible(ctx context.Context, v *roomViewer, evs []storage.SyncEvent) (kept []storage.SyncEvent, dropped bool, err error) {
	kept = evs[:0:0]
	for _, e := range evs {
		ok, err := s.canSee(ctx, v, e.Pos)
		if err != nil {
			return nil, false, err
		}
		if ok {
			kept = append(kept, e)
		}
	}
	return kept, len(kept) < len(evs), nil
}

// render converts events for the requesting device, with prev_content of
// state events whose replaced event the user may see (loaded in one query)
// and the user's membership at each event (unsigned.membership).
func (s *Syncer) render(ctx context.Context, req *Request, v *roomViewer, evs []storage.SyncEvent) ([]json.RawMessage, error) {
	var replaced []string
	for _, e := range evs {
		if e.ReplacesState != "" {
			replaced = append(replaced, e.ReplacesState)
		}
	}
	prev := map[string]json.RawMessage{}
	if len(replaced) > 0 {
		pes, err := s.store.EventsByID(ctx, replaced)
		if err != nil {
			return nil, err
		}
		for _, p := range pes {
			ok, err := s.canSee(ctx, v, p.Pos)
			if err != nil {
				return nil, err
			}
			if c := gjson.Get(p.JSON, "content"); ok && c.IsObject() {
				prev[p.EventID] = json.RawMessage(c.Raw)
			}
		}
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		if e.ReplacesState != "" {
			e.PrevContent = prev[e.ReplacesState]
		}
		e.Membership = v.hv.MembershipAt(e.Pos)
		if ce := push.ClientEvent(e, req.UserID, req.DeviceID); ce != nil {
			out = append(out, ce)
		}
	}
	return out, nil
}
