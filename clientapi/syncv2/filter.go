package syncv2

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Filter is a parsed sync filter with the spec's defaults filled in.
type Filter struct {
	mautrix.Filter
	// zeroTimeline: the filter asks for a timeline limit of 0, which
	// mautrix's Limit (omitempty) cannot tell from none.
	zeroTimeline bool
}

// withRaw notes what the decoded filter loses from its JSON.
func (f *Filter) withRaw(raw []byte) *Filter {
	lim := gjson.GetBytes(raw, "room.timeline.limit")
	f.zeroTimeline = lim.Type == gjson.Number && lim.Num == 0
	return f
}

// defaultTimelineLimit is the timeline limit when the filter sets none.
const defaultTimelineLimit = 10

// maxTimelineLimit caps what a client may ask for.
const maxTimelineLimit = 100

// ParseFilter checks and decodes an inline filter definition with the
// validator POST /filter applies (accounts.ParseFilter). It is a query
// parameter: every refusal is M_INVALID_PARAM.
func ParseFilter(raw string) (*Filter, error) {
	if strings.TrimSpace(raw) == "" {
		return &Filter{}, nil
	}
	parsed, err := accounts.ParseFilter([]byte(raw))
	var mErr *mxhttp.Error
	if errors.As(err, &mErr) {
		return nil, mxhttp.InvalidParam("Invalid filter: %s", mErr.Message)
	}
	if err != nil {
		return nil, err
	}
	return (&Filter{Filter: *parsed}).withRaw([]byte(raw)), nil
}

// parseStoredFilter decodes a filter stored by POST /filter, which checked
// it then: a filter stored before a check was added keeps working.
func parseStoredFilter(raw []byte) (*Filter, error) {
	f := &Filter{}
	if err := mxhttp.DecodeJSON(raw, &f.Filter); err != nil {
		return nil, fmt.Errorf("stored filter: %w", err)
	}
	return f.withRaw(raw), nil
}

func (f *Filter) room() *mautrix.RoomFilter {
	if f.Room == nil {
		return &mautrix.RoomFilter{}
	}
	return f.Room
}

// TimelineLimit is the number of timeline events per room (0: none).
func (f *Filter) TimelineLimit() int {
	if f.zeroTimeline {
		return 0
	}
	if tl := f.room().Timeline; tl != nil && tl.Limit > 0 {
		return min(tl.Limit, maxTimelineLimit)
	}
	return defaultTimelineLimit
}

// LazyLoadMembers reports lazy_load_members on the state filter.
func (f *Filter) LazyLoadMembers() bool {
	st := f.room().State
	return st != nil && st.LazyLoadMembers
}

// IncludeRedundantMembers reports include_redundant_members on the state filter.
func (f *Filter) IncludeRedundantMembers() bool {
	st := f.room().State
	return st != nil && st.IncludeRedundantMembers
}

// ThreadNotifications reports unread_thread_notifications (timeline or state filter).
func (f *Filter) ThreadNotifications() bool {
	r := f.room()
	return (r.Timeline != nil && r.Timeline.UnreadThreadNotifications) || (r.State != nil && r.State.UnreadThreadNotifications)
}

// RoomAllowed applies the room filter's rooms/not_rooms.
func (f *Filter) RoomAllowed(roomID string) bool {
	r := f.room()
	return roomListAllows(r.Rooms, r.NotRooms, roomID)
}

func roomListAllows(rooms, notRooms []id.RoomID, roomID string) bool {
	for _, r := range notRooms {
		if string(r) == roomID {
			return false
		}
	}
	if rooms == nil {
		return true
	}
	for _, r := range rooms {
		if string(r) == roomID {
			return true
		}
	}
	return false
}

// Restrictive reports whether a part can drop events, so that the reader
// should fetch more than the limit before filtering.
func restrictive(p *mautrix.FilterPart) bool {
	return p != nil && (p.Types != nil || len(p.NotTypes) > 0 || p.Senders != nil || len(p.NotSenders) > 0 || p.ContainsURL != nil)
}

// typeMatches matches an event type against a filter pattern; '*' matches any run of characters.
func typeMatches(pattern, typ string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == typ
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(typ, parts[0]) {
		return false
	}
	typ = typ[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(typ, p)
		}
		j := strings.Index(typ, p)
		if j < 0 {
			return false
		}
		typ = typ[j+len(p):]
	}
	return true
}

// allows applies an event filter part to one event (type, sender, room and
// contains_url; nil allows everything). content may be nil for what has no
// content to look into (typing, receipts, presence, account data): it has no
// url, so contains_url true drops it and false keeps it.
func allows(p *mautrix.FilterPart, typ, sender, roomID string, content func() map[string]any) bool {
	if p == nil {
		return true
	}
	if roomID != "" && !roomListAllows(p.Rooms, p.NotRooms, roomID) {
		return false
	}
	for _, t := range p.NotTypes {
		if typeMatches(t.Type, typ) {
			return false
		}
	}
	if p.Types != nil {
		ok := false
		for _, t := range p.Types {
			ok = ok || typeMatches(t.Type, typ)
		}
		if !ok {
			return false
		}
	}
	for _, s := range p.NotSenders {
		if string(s) == sender {
			return false
		}
	}
	if p.Senders != nil {
		ok := false
		for _, s := range p.Senders {
			ok = ok || string(s) == sender
		}
		if !ok {
			return false
		}
	}
	if p.ContainsURL != nil {
		has := false
		if content != nil {
			_, has = content()["url"].(string)
		}
		if has != *p.ContainsURL {
			return false
		}
	}
	return true
}

// allowsEvent applies a part to a stored room event.
func allowsEvent(p *mautrix.FilterPart, e *storage.Event) bool {
	return allows(p, e.Type, e.Sender, e.RoomID, func() map[string]any {
		var pdu struct {
			Content map[string]any `json:"content"`
		}
		_ = json.Unmarshal([]byte(e.JSON), &pdu)
		return pdu.Content
	})
}

// rawContent is the content func of allows for a JSON object.
func rawContent(raw json.RawMessage) func() map[string]any {
	return func() map[string]any {
		var c map[string]any
		_ = json.Unmarshal(raw, &c)
		return c
	}
}

// typeAllowed applies only a part's types/not_types.
func typeAllowed(p *mautrix.FilterPart, typ string) bool {
	if p == nil {
		return true
	}
	return allows(&mautrix.FilterPart{Types: p.Types, NotTypes: p.NotTypes}, typ, "", "", nil)
}
