package slidingsync

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Limits on a request (the MSC's maxima, and caps of our own).
const (
	maxLists         = 100
	maxSubscriptions = 100
	maxRanges        = 100
	maxTimelineLimit = 100
	maxStateRules    = 100
	maxConnIDLen     = 255
	// Each filter's lists (spaces, tags, room types) after removing
	// duplicates, and the distinct spaces of all lists together: every
	// space is one state read per response.
	maxFilterEntries = 50
	maxSpacesTotal   = 100
)

// errUnknownPos tells the client to start the connection again.
func errUnknownPos(msg string) error {
	return &mxhttp.Error{Status: http.StatusBadRequest, Code: "M_UNKNOWN_POS", Message: msg}
}

// request is the body of a sliding sync request. Both wire shapes are
// accepted: the one Element X and Synapse speak (ranges, required_state as
// [type, state_key] pairs with "*", "$LAZY" and "$ME", is_invite) and the
// MSC's current text (range, required_state {include, exclude,
// lazy_members}, is_invited, pos and timeout in the body).
type request struct {
	ConnID            string                `json:"conn_id"`
	TxnID             *string               `json:"txn_id"` // echoed (MSC3575; older clients match answers by it)
	Pos               *string               `json:"pos"`
	Timeout           *int64                `json:"timeout"`
	SetPresence       *string               `json:"set_presence"`
	Lists             map[string]listConfig `json:"lists"`
	RoomSubscriptions map[string]roomConfig `json:"room_subscriptions"`
	// Subscriptions are remembered by the connection (MSC3575's sticky
	// parameters, as matrix-js-sdk expects) until named here.
	UnsubscribeRooms []string          `json:"unsubscribe_rooms"`
	Extensions       extensionsRequest `json:"extensions"`
}

// roomConfig is what to send for a matched room.
type roomConfig struct {
	TimelineLimit *int            `json:"timeline_limit"`
	RequiredState json.RawMessage `json:"required_state"`
	state         stateConfig
}

// listConfig is one sliding window over the user's rooms.
type listConfig struct {
	roomConfig
	Ranges  [][]int64    `json:"ranges"`
	Range   []int64      `json:"range"`
	Filters *listFilters `json:"filters"`
}

type listFilters struct {
	IsDM         *bool     `json:"is_dm"`
	IsInvite     *bool     `json:"is_invite"`
	IsInvited    *bool     `json:"is_invited"`
	IsEncrypted  *bool     `json:"is_encrypted"`
	Spaces       []string  `json:"spaces"`
	RoomTypes    []*string `json:"room_types"`
	NotRoomTypes []*string `json:"not_room_types"`
	Tags         []string  `json:"tags"`
	NotTags      []string  `json:"not_tags"`
}

func (f *listFilters) invite() *bool {
	if f.IsInvited != nil {
		return f.IsInvited
	}
	return f.IsInvite
}

type extensionToggle struct {
	Enabled *bool `json:"enabled"`
}

// roomScope is the reserved lists/rooms pair of a room-scoped extension
// (account_data, receipts, typing): which lists' rooms and which room
// subscriptions it covers. Absent means all ("*"); [] means none.
type roomScope struct {
	extensionToggle
	Lists *[]string `json:"lists"`
	Rooms *[]string `json:"rooms"`
}

// covers reports whether a room in the answer, in the windows of lists and
// subscribed or not, is in the extension's scope.
func (s *roomScope) covers(roomID string, lists []string, subscribed bool) bool {
	if s.Lists == nil || slices.Contains(*s.Lists, "*") {
		if len(lists) > 0 {
			return true
		}
	} else {
		for _, l := range lists {
			if slices.Contains(*s.Lists, l) {
				return true
			}
		}
	}
	if !subscribed {
		return false
	}
	return s.Rooms == nil || slices.Contains(*s.Rooms, "*") || slices.Contains(*s.Rooms, roomID)
}

// on is extensionToggle's, safe on an absent extension.
func (s *roomScope) on() bool { return s != nil && s.extensionToggle.on() }

func (s *roomScope) validate(name string) error {
	if s == nil {
		return nil
	}
	if (s.Lists != nil && len(*s.Lists) > maxLists+1) || (s.Rooms != nil && len(*s.Rooms) > maxSubscriptions+1) {
		return mxhttp.InvalidParam("extensions.%s: too many lists or rooms", name)
	}
	return nil
}

func (e *extensionToggle) on() bool { return e != nil && e.Enabled != nil && *e.Enabled }

type extensionsRequest struct {
	ToDevice *struct {
		extensionToggle
		Since *string `json:"since"`
		Limit *int    `json:"limit"`
	} `json:"to_device"`
	E2EE        *extensionToggle `json:"e2ee"`
	AccountData *roomScope       `json:"account_data"`
	Receipts    *roomScope       `json:"receipts"`
	Typing      *roomScope       `json:"typing"`
	// Others (thread subscriptions, profiles, sticky events, ...) are not
	// served and, as MSC4186 says of unknown extensions, ignored.
}

// stateRule matches state by (type, state_key); "" in a field matches anything.
type stateRule struct {
	Type, StateKey string
	anyType        bool
	anyKey         bool
}

// stateConfig is a parsed required_state.
type stateConfig struct {
	include []stateRule
	exclude []stateRule
	lazy    bool // lazy-load members: timeline senders and targets
}

func (r stateRule) matches(typ, key, me string) bool {
	if !r.anyType && r.Type != typ {
		return false
	}
	if r.anyKey {
		return true
	}
	want := r.StateKey
	if want == "$ME" {
		want = me
	}
	return want == key
}

// wants reports whether the config asks for the state event (type, key).
func (c *stateConfig) wants(typ, key, me string) bool {
	in := false
	for _, r := range c.include {
		if r.matches(typ, key, me) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, r := range c.exclude {
		if r.matches(typ, key, me) {
			return false
		}
	}
	return true
}

// combined is the superset of the room configs a room matched: the largest
// timeline limit and every required_state (a state event is wanted if any
// config wants it).
type combined struct {
	limit  int
	states []stateConfig
}

func (c *combined) add(rc roomConfig) {
	c.limit = max(c.limit, rc.limit())
	c.states = append(c.states, rc.state)
}

func (c *combined) wants(typ, key, me string) bool {
	for i := range c.states {
		if c.states[i].wants(typ, key, me) {
			return true
		}
	}
	return false
}

func (c *combined) lazy() bool {
	for _, s := range c.states {
		if s.lazy {
			return true
		}
	}
	return false
}

// key is a canonical description of the required state, to notice a change.
func (c *combined) key() string {
	keys := make([]string, len(c.states))
	for i := range c.states {
		keys[i] = c.states[i].key()
	}
	sort.Strings(keys)
	return strings.Join(keys, "\n")
}

// key is canonical: the same rules in another order (or repeated) are the
// same config, so a client re-sending its config does not look like a change.
func (c *stateConfig) key() string {
	rules := func(rs []stateRule) string {
		keys := make([]string, len(rs))
		for i, r := range rs {
			keys[i] = ruleKey(r)
		}
		sort.Strings(keys)
		return strings.Join(dedupe(keys), ";")
	}
	k := rules(c.include) + "|" + rules(c.exclude)
	if c.lazy {
		k += "|lazy"
	}
	return k
}

func ruleKey(r stateRule) string {
	t, k := r.Type, r.StateKey
	if r.anyType {
		t = "*"
	}
	if r.anyKey {
		k = "*"
	}
	return t + "\x00" + k
}

// parseRequiredState reads either wire shape of required_state.
func parseRequiredState(raw json.RawMessage) (stateConfig, error) {
	var c stateConfig
	s := strings.TrimSpace(string(raw))
	switch {
	case s == "" || s == "null":
		return c, nil
	case strings.HasPrefix(s, "["):
		var pairs [][]string
		if err := json.Unmarshal(raw, &pairs); err != nil {
			return c, mxhttp.BadJSON("required_state must be a list of [type, state_key] pairs")
		}
		if len(pairs) > maxStateRules {
			return c, mxhttp.InvalidParam("required_state may have at most %d entries", maxStateRules)
		}
		for _, p := range pairs {
			if len(p) != 2 {
				return c, mxhttp.BadJSON("required_state entries must be [type, state_key] pairs")
			}
			if p[0] == "m.room.member" && p[1] == "$LAZY" {
				c.lazy = true
				continue
			}
			c.include = append(c.include, stateRule{Type: p[0], StateKey: p[1], anyType: p[0] == "*", anyKey: p[1] == "*"})
		}
		return c, nil
	case strings.HasPrefix(s, "{"):
		var obj struct {
			Include     []map[string]string `json:"include"`
			Exclude     []map[string]string `json:"exclude"`
			LazyMembers bool                `json:"lazy_members"`
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			return c, mxhttp.BadJSON("required_state has the wrong shape: %v", err)
		}
		if len(obj.Include)+len(obj.Exclude) > maxStateRules {
			return c, mxhttp.InvalidParam("required_state may have at most %d entries", maxStateRules)
		}
		conv := func(m map[string]string) stateRule {
			t, hasT := m["type"]
			k, hasK := m["state_key"]
			return stateRule{Type: t, StateKey: k, anyType: !hasT, anyKey: !hasK}
		}
		for _, m := range obj.Include {
			c.include = append(c.include, conv(m))
		}
		for _, m := range obj.Exclude {
			c.exclude = append(c.exclude, conv(m))
		}
		c.lazy = obj.LazyMembers
		return c, nil
	}
	return c, mxhttp.BadJSON("required_state must be a list or an object")
}

// validate checks the request and parses its room configs.
func (req *request) validate() error {
	if len(req.ConnID) > maxConnIDLen {
		return mxhttp.InvalidParam("conn_id is too long")
	}
	if len(req.Lists) > maxLists {
		return mxhttp.InvalidParam("At most %d lists are allowed", maxLists)
	}
	if len(req.RoomSubscriptions) > maxSubscriptions {
		return mxhttp.InvalidParam("At most %d room subscriptions are allowed", maxSubscriptions)
	}
	spaces := map[string]bool{}
	for name, l := range req.Lists {
		if name == "" || len(name) > 64 {
			return mxhttp.InvalidParam("List names must be 1 to 64 characters")
		}
		if err := l.roomConfig.parse(); err != nil {
			return err
		}
		if l.Range != nil {
			l.Ranges = append(l.Ranges, l.Range)
		}
		if len(l.Ranges) > maxRanges {
			return mxhttp.InvalidParam("List %q has too many ranges", name)
		}
		for _, r := range l.Ranges {
			if len(r) != 2 || r[0] < 0 || r[1] < r[0] {
				return mxhttp.InvalidParam("List %q: a range is [start, end] with 0 <= start <= end", name)
			}
		}
		if l.Filters == nil {
			l.Filters = &listFilters{}
		}
		if err := l.Filters.normalize(name); err != nil {
			return err
		}
		for _, sp := range l.Filters.Spaces {
			spaces[sp] = true
		}
		if len(spaces) > maxSpacesTotal {
			return mxhttp.InvalidParam("At most %d distinct spaces may be filtered on across all lists", maxSpacesTotal)
		}
		req.Lists[name] = l
	}
	for roomID, sub := range req.RoomSubscriptions {
		if !strings.HasPrefix(roomID, "!") {
			return mxhttp.InvalidParam("room_subscriptions keys must be room IDs")
		}
		if err := sub.parse(); err != nil {
			return err
		}
		req.RoomSubscriptions[roomID] = sub
	}
	if len(req.UnsubscribeRooms) > maxSubscriptions {
		return mxhttp.InvalidParam("At most %d rooms may be unsubscribed at once", maxSubscriptions)
	}
	for _, roomID := range req.UnsubscribeRooms {
		if !strings.HasPrefix(roomID, "!") {
			return mxhttp.InvalidParam("unsubscribe_rooms entries must be room IDs")
		}
	}
	for name, sc := range map[string]*roomScope{"account_data": req.Extensions.AccountData,
		"receipts": req.Extensions.Receipts, "typing": req.Extensions.Typing} {
		if err := sc.validate(name); err != nil {
			return err
		}
	}
	if req.TxnID != nil && len(*req.TxnID) > maxConnIDLen {
		return mxhttp.InvalidParam("txn_id is too long")
	}
	if td := req.Extensions.ToDevice; td != nil && td.Limit != nil && *td.Limit < 0 {
		return mxhttp.InvalidParam("to_device limit must not be negative")
	}
	return nil
}

// normalize drops duplicate filter entries and caps what remains.
func (f *listFilters) normalize(list string) error {
	var err error
	uniq := func(field string, in []string) []string {
		if in == nil {
			return nil
		}
		out := dedupe(in)
		if len(out) > maxFilterEntries && err == nil {
			err = mxhttp.InvalidParam("List %q: filters.%s may have at most %d entries", list, field, maxFilterEntries)
		}
		return out
	}
	uniqTypes := func(field string, in []*string) []*string {
		if in == nil {
			return nil
		}
		seen := map[string]bool{}
		out := in[:0:0]
		for _, t := range in {
			k := "\x00null"
			if t != nil {
				k = *t
			}
			if !seen[k] {
				seen[k] = true
				out = append(out, t)
			}
		}
		if len(out) > maxFilterEntries && err == nil {
			err = mxhttp.InvalidParam("List %q: filters.%s may have at most %d entries", list, field, maxFilterEntries)
		}
		return out
	}
	f.Spaces = uniq("spaces", f.Spaces)
	f.Tags = uniq("tags", f.Tags)
	f.NotTags = uniq("not_tags", f.NotTags)
	f.RoomTypes = uniqTypes("room_types", f.RoomTypes)
	f.NotRoomTypes = uniqTypes("not_room_types", f.NotRoomTypes)
	return err
}

func (c *roomConfig) parse() error {
	if c.TimelineLimit != nil && *c.TimelineLimit < 0 {
		return mxhttp.InvalidParam("timeline_limit must not be negative")
	}
	st, err := parseRequiredState(c.RequiredState)
	if err != nil {
		return err
	}
	c.state = st
	return nil
}

func (c *roomConfig) limit() int {
	if c.TimelineLimit == nil {
		return 0
	}
	return min(*c.TimelineLimit, maxTimelineLimit)
}

func sortStrings(s []string) { sort.Strings(s) }
