package syncv2

import (
	"encoding/json"

	"github.com/myelin-chat/myelin/push"
)

// Response is the body of GET /sync (sync.yaml). Empty sections are left out.
type Response struct {
	NextBatch   string         `json:"next_batch"`
	Rooms       *Rooms         `json:"rooms,omitempty"`
	AccountData *Events        `json:"account_data,omitempty"`
	Presence    *Events        `json:"presence,omitempty"`
	ToDevice    *Events        `json:"to_device,omitempty"`
	DeviceLists *DeviceLists   `json:"device_lists,omitempty"`
	OTKCounts   map[string]int `json:"device_one_time_keys_count,omitempty"`
	// Always sent (even empty) when /sync has a keyserver (Options.Keys), so clients know
	// the server supports fallback keys.
	FallbackKeyTypes *[]string `json:"device_unused_fallback_key_types,omitempty"`

	toDevice int64 // how far to-device messages were delivered
}

// Rooms are the per-membership room sections.
type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join,omitempty"`
	Invite map[string]*InvitedRoom `json:"invite,omitempty"`
	Leave  map[string]*LeftRoom    `json:"leave,omitempty"`
	Knock  map[string]*KnockedRoom `json:"knock,omitempty"`
}

// Events is a list of events ({"events": [...]}).
type Events struct {
	Events []json.RawMessage `json:"events"`
}

func (e *Events) empty() bool { return e == nil || len(e.Events) == 0 }

func eventsOrNil(evs []json.RawMessage) *Events {
	if len(evs) == 0 {
		return nil
	}
	return &Events{Events: evs}
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// Summary is a room's summary (heroes and member counts).
type Summary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  *int     `json:"m.joined_member_count,omitempty"`
	Invited *int     `json:"m.invited_member_count,omitempty"`
}

// JoinedRoom is one room in rooms.join.
type JoinedRoom struct {
	Summary     *Summary               `json:"summary,omitempty"`
	State       *Events                `json:"state,omitempty"`
	StateAfter  *Events                `json:"state_after,omitempty"`
	Timeline    *Timeline              `json:"timeline,omitempty"`
	Ephemeral   *Events                `json:"ephemeral,omitempty"`
	AccountData *Events                `json:"account_data,omitempty"`
	Unread      *push.Counts           `json:"unread_notifications,omitempty"`
	UnreadThr   map[string]push.Counts `json:"unread_thread_notifications,omitempty"`
}

// InvitedRoom is one room in rooms.invite.
type InvitedRoom struct {
	InviteState Events `json:"invite_state"`
}

// KnockedRoom is one room in rooms.knock.
type KnockedRoom struct {
	KnockState Events `json:"knock_state"`
}

// LeftRoom is one room in rooms.leave.
type LeftRoom struct {
	State       *Events   `json:"state,omitempty"`
	StateAfter  *Events   `json:"state_after,omitempty"`
	Timeline    *Timeline `json:"timeline,omitempty"`
	AccountData *Events   `json:"account_data,omitempty"`
}

// DeviceLists are the users whose device lists changed or who no longer share a room.
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// hasUpdates reports whether the response carries anything a long-poll
// should return for (key counts are always present, so they do not count).
func (r *Response) hasUpdates() bool {
	if r.Rooms != nil && (len(r.Rooms.Join)+len(r.Rooms.Invite)+len(r.Rooms.Leave)+len(r.Rooms.Knock)) > 0 {
		return true
	}
	if !r.AccountData.empty() || !r.Presence.empty() || !r.ToDevice.empty() {
		return true
	}
	return r.DeviceLists != nil && len(r.DeviceLists.Changed)+len(r.DeviceLists.Left) > 0
}
