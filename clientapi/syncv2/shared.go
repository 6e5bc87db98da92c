package syncv2

import (
	"context"
	"encoding/json"

	"github.com/myelin-chat/myelin/storage"
)

// Building blocks shared with other sync flavours (clientapi/slidingsync):
// the same reads, history visibility and event rendering as GET /sync.

// Membership is a user's membership history in one room, up to a position.
type Membership struct{ m *roomMembership }

// At is the latest membership event at or before the read position.
func (m *Membership) At() storage.UserMembershipChange { return m.m.at }

// EverJoined reports whether the user was ever joined to the room.
func (m *Membership) EverJoined() bool {
	for _, h := range m.m.history {
		if h.Value == "join" {
			return true
		}
	}
	return false
}

// JoinEnd is the position of the membership event that ended the user's
// latest join (the last state they may see of a room they left); ok is false
// when they never joined or are still joined.
func (m *Membership) JoinEnd() (pos int64, ok bool) { return m.m.joinEnd() }

// Memberships is every room the user has a membership event in, up to to.
func (s *Syncer) Memberships(ctx context.Context, userID string, to int64) (map[string]*Membership, error) {
	mems, err := s.memberships(ctx, userID, 0, to)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Membership, len(mems))
	for r, m := range mems {
		out[r] = &Membership{m: m}
	}
	return out, nil
}

// Viewer applies one room's history visibility for one user and renders
// events for the requesting device.
type Viewer struct {
	s   *Syncer
	v   *roomViewer
	req *Request
}

// Viewer returns the viewer of roomID for the user and device, whose
// membership history is m.
func (s *Syncer) Viewer(userID, deviceID, roomID string, m *Membership) *Viewer {
	return &Viewer{s: s, v: s.roomViewer(roomID, m.m), req: &Request{UserID: userID, DeviceID: deviceID, Filter: &Filter{}}}
}

// Visible keeps the events the user may see.
func (v *Viewer) Visible(ctx context.Context, evs []*storage.Event) ([]*storage.Event, error) {
	kept, _, err := v.s.visible(ctx, v.v, evs)
	return kept, err
}

// Render converts events to the client format (with prev_content the user may see).
func (v *Viewer) Render(ctx context.Context, evs []*storage.Event) ([]json.RawMessage, error) {
	return v.s.render(ctx, v.req, v.v, evs)
}

// PrevBatch is the /messages token that continues backwards from before pos.
func (v *Viewer) PrevBatch(pos int64) string { return v.s.prevBatch(pos) }

// CutAtGap starts a timeline (evs, in stream order) at its latest event
// stored after a gap in the room's history (storage.Event.AfterGap): the
// events from it on and that event, or evs and nil when it holds none.
func CutAtGap(evs []*storage.Event) ([]*storage.Event, *storage.Event) {
	gap := lastGap(evs)
	return cutAtGap(evs, gap), gap
}

// GapPrevBatch is the prev_batch of a timeline cut at a gap whose first
// event is e: /messages from it pages back into the gap.
func (v *Viewer) GapPrevBatch(e *storage.Event) string { return v.s.gapPrevBatch(e) }

// StrippedState is the stripped state shown with an invite or knock.
func (s *Syncer) StrippedState(ctx context.Context, roomID string, m *Membership) ([]json.RawMessage, error) {
	return s.strippedState(ctx, roomID, m.m.at)
}

// Current is the position a read may safely go up to (stream and typing).
func (s *Syncer) Current() Token { return s.current() }

// ReceiptEvent renders receipts as one m.receipt event (nil if none the user may see).
func ReceiptEvent(userID string, receipts []storage.Receipt) json.RawMessage {
	return receiptEvent(userID, receipts)
}
