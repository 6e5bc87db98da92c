package roomserver

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// Positioned is a membership or history_visibility value taking effect at a
// stream position (the position of the event that set it).
type Positioned = storage.PositionedValue

// HistoryVisibility applies the spec's history visibility rules
// (client-server API, "Room History Visibility", server behaviour) for one
// user in one room. /messages, /context, /event, relations and /sync all
// decide with it, so every API shows a user the same events.
type HistoryVisibility struct {
	// Memberships are the user's membership events in the room, ascending by position.
	Memberships []Positioned
	// Visibility are the room's m.room.history_visibility events (their
	// content.history_visibility), ascending by position.
	Visibility []Positioned
}

// before returns the last value set strictly before pos, and the value set
// by the event at pos itself (equal to the former when none is).
func before(list []Positioned, pos int64, dflt string) (prior, at string) {
	prior = dflt
	for _, p := range list {
		if p.Pos >= pos {
			if p.Pos == pos {
				return prior, p.Value
			}
			break
		}
		prior = p.Value
	}
	return prior, prior
}

func normalVisibility(v string) string {
	switch v {
	case "world_readable", "shared", "invited", "joined":
		return v
	}
	return "shared" // unset or not understood
}

// JoinedAt reports whether the user was joined when the event at pos was
// sent (or the event is their own join or leave after having joined): then
// the event is visible whatever the history visibility, so callers can skip
// loading Visibility.
func (h *HistoryVisibility) JoinedAt(pos int64) bool {
	prior, at := before(h.Memberships, pos, "leave")
	return prior == "join" || at == "join"
}

// CanSee reports whether the user may see the event at stream position pos.
// The rules apply to the state before the event; for the room's
// history_visibility events and the user's own membership events, the state
// after the event may allow it too (both are in the lists at pos).
func (h *HistoryVisibility) CanSee(pos int64) bool {
	visPrior, visAt := before(h.Visibility, pos, "shared")
	memPrior, memAt := before(h.Memberships, pos, "leave")
	if h.allowed(normalVisibility(visPrior), memPrior, pos) {
		return true
	}
	return (visAt != visPrior || memAt != memPrior) && h.allowed(normalVisibility(visAt), memAt, pos)
}

func (h *HistoryVisibility) allowed(vis, membership string, pos int64) bool {
	switch {
	case vis == "world_readable", membership == "join":
		return true
	case vis == "shared":
		// The user joined at some point after the event was sent.
		for _, m := range h.Memberships {
			if m.Pos >= pos && m.Value == "join" {
				return true
			}
		}
	case vis == "invited":
		return membership == "invite"
	}
	return false
}

type deviceKey struct{}

type requester struct {
	user   id.UserID
	device id.DeviceID
}

// WithDevice tells the read APIs (Event, Messages, Context, State, Members,
// Relations, Threads) which device of user is asking: events that device sent
// with a transaction ID carry unsigned.transaction_id, for no one else.
func WithDevice(ctx context.Context, user id.UserID, device id.DeviceID) context.Context {
	return context.WithValue(ctx, deviceKey{}, requester{user, device})
}

// requestingDevice is the device WithDevice recorded for user ("" if none).
func requestingDevice(ctx context.Context, user id.UserID) id.DeviceID {
	if r, ok := ctx.Value(deviceKey{}).(requester); ok && r.user == user {
		return r.device
	}
	return ""
}
