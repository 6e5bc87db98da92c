package slidingsync

import "encoding/json"

// response is the body of a sliding sync answer.
type response struct {
	TxnID      *string                `json:"txn_id,omitempty"`
	Pos        string                 `json:"pos"`
	Lists      map[string]listResult  `json:"lists"`
	Rooms      map[string]*roomResult `json:"rooms"`
	Extensions map[string]any         `json:"extensions"`
}

type listResult struct {
	Count int `json:"count"`
}

// hero is a member to name a room without a name by.
type hero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// roomResult is one room in the answer; absent fields are unchanged
// (initial: not set).
type roomResult struct {
	Name              *json.RawMessage  `json:"name,omitempty"` // a string, or null once removed
	Avatar            *json.RawMessage  `json:"avatar,omitempty"`
	Heroes            []hero            `json:"heroes,omitempty"`
	Initial           bool              `json:"initial,omitempty"`
	ExpandedTimeline  bool              `json:"expanded_timeline,omitempty"`
	RequiredState     []json.RawMessage `json:"required_state,omitempty"`
	Timeline          []json.RawMessage `json:"timeline,omitempty"`
	PrevBatch         string            `json:"prev_batch,omitempty"`
	Limited           bool              `json:"limited,omitempty"`
	NumLive           *int              `json:"num_live,omitempty"`
	BumpStamp         int64             `json:"bump_stamp,omitempty"`
	JoinedCount       *int              `json:"joined_count,omitempty"`
	InvitedCount      *int              `json:"invited_count,omitempty"`
	NotificationCount *int              `json:"notification_count,omitempty"`
	HighlightCount    *int              `json:"highlight_count,omitempty"`
	Membership        string            `json:"membership,omitempty"`
	Lists             []string          `json:"lists,omitempty"`
	IsDM              bool              `json:"is_dm,omitempty"`
	// Invites and knocks: the stripped state, under both names (Element X
	// reads invite_state, the MSC's current text says stripped_state).
	InviteState   []json.RawMessage `json:"invite_state,omitempty"`
	StrippedState []json.RawMessage `json:"stripped_state,omitempty"`
}
