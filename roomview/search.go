package roomview

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"unicode"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Server-side search (POST /search, category room_events): full text over
// the events the user may see, in the rooms they have a membership in. The
// index is written with the events (storage/search.go); visibility is
// visibility.History's, pushed into SQL as each room's visible
// stream ranges and checked again per result.

const (
	DefaultSearchLimit = 10
	MaxSearchLimit     = 100
	// MaxSearchTermBytes bounds search_term; maxSearchTerms the words used.
	MaxSearchTermBytes = 1000
	maxSearchTerms     = 16
	// DefaultSearchContext is event_context's default before/after limit;
	// MaxSearchContext caps each.
	DefaultSearchContext = 5
	MaxSearchContext     = 20
	// maxSearchRounds bounds the queries one page may take when results
	// the ranges let through are hidden after all (merged ranges).
	maxSearchRounds = 5
	// maxSearchRanges bounds the (room, span) pairs one query names (three
	// parameters each, within both backends' limits): past it, the rooms
	// with the oldest membership changes are left out.
	maxSearchRanges = 8000
)

// SearchRequest is the room_events criteria of POST /search.
type SearchRequest struct {
	Term         string
	Keys         []string     // content.body, content.name, content.topic; all when empty
	Filter       *EventFilter // rooms, not_rooms, senders, types, contains_url, limit
	OrderBy      string       // "rank" (default) or "recent"
	Context      *SearchContextRequest
	IncludeState bool
	GroupBy      []string // "room_id", "sender"
	NextBatch    string
}

// SearchContextRequest is event_context.
type SearchContextRequest struct {
	BeforeLimit    int
	AfterLimit     int
	IncludeProfile bool
}

// SearchResponse is search_categories.room_events of the answer.
type SearchResponse struct {
	Count      int                                      `json:"count"`
	Highlights []string                                 `json:"highlights"`
	Results    []SearchResult                           `json:"results"`
	State      map[id.RoomID][]json.RawMessage          `json:"state,omitempty"`
	Groups     map[string]map[string]*SearchResultGroup `json:"groups,omitempty"`
	NextBatch  string                                   `json:"next_batch,omitempty"`
}

// SearchResult is one result.
type SearchResult struct {
	Rank    float64         `json:"rank"`
	Result  json.RawMessage `json:"result"`
	Context *SearchContext  `json:"context,omitempty"`
}

// SearchContext is the context of a result.
type SearchContext struct {
	Start        string                      `json:"start,omitempty"`
	End          string                      `json:"end,omitempty"`
	ProfileInfo  map[id.UserID]SearchProfile `json:"profile_info,omitempty"`
	EventsBefore []json.RawMessage           `json:"events_before"`
	EventsAfter  []json.RawMessage           `json:"events_after"`
}

// SearchProfile is a sender's profile at the time of a result.
type SearchProfile struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// SearchResultGroup is one value of a grouping.
type SearchResultGroup struct {
	NextBatch string       `json:"next_batch,omitempty"`
	Order     int          `json:"order"`
	Results   []id.EventID `json:"results"`
}

// searchToken is the opaque next_batch: the order it continues, the last
// result's rank and position (a keyset cursor), and the group it is
// scoped to, if any.
type searchToken struct {
	Order string  `json:"o"`
	Rank  float64 `json:"r,omitempty"`
	Pos   int64   `json:"p"`
	Group string  `json:"g,omitempty"` // "room_id" or "sender"
	Value string  `json:"v,omitempty"`
}

func (t searchToken) String() string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseSearchToken(s string) (*searchToken, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	var t searchToken
	if err != nil || len(s) > 2048 || json.Unmarshal(b, &t) != nil ||
		(t.Order != "rank" && t.Order != "recent") || (t.Group != "" && t.Group != "room_id" && t.Group != "sender") {
		return nil, roomserver.InvalidParam("Invalid next_batch token")
	}
	return &t, nil
}

// SearchTerms splits a search term into the words searched: runs of letters
// and digits, lower-cased, at most maxSearchTerms of them.
func SearchTerms(term string) []string {
	var out []string
	for _, w := range words(term) {
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	if len(out) > maxSearchTerms {
		out = out[:maxSearchTerms]
	}
	return out
}

// words are the runs of letters and digits of s, lower-cased.
func words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

// validate checks the request and normalises its defaults.
func (r *SearchRequest) validate() error {
	if len(r.Term) > MaxSearchTermBytes {
		return roomserver.InvalidParam("search_term is longer than %d bytes", MaxSearchTermBytes)
	}
	switch r.OrderBy {
	case "":
		r.OrderBy = "rank"
	case "rank", "recent":
	default:
		return roomserver.InvalidParam("order_by must be \"rank\" or \"recent\"")
	}
	for _, k := range r.Keys {
		if _, ok := storage.SearchKeyTypes[k]; !ok {
			return roomserver.InvalidParam("Unknown search key %q", k)
		}
	}
	for _, g := range r.GroupBy {
		if g != "room_id" && g != "sender" {
			return roomserver.InvalidParam("Unknown group_by key %q", g)
		}
	}
	if c := r.Context; c != nil {
		if c.BeforeLimit < 0 || c.AfterLimit < 0 {
			return roomserver.InvalidParam("event_context limits must not be negative")
		}
		c.BeforeLimit, c.AfterLimit = min(c.BeforeLimit, MaxSearchContext), min(c.AfterLimit, MaxSearchContext)
	}
	return nil
}

// searchRoom is a room taking part in a search.
type searchRoom struct {
	version id.RoomVersion
	v       *viewer
}

// Search runs a room_events search for user.
func (s *Service) Search(ctx context.Context, user id.UserID, req SearchRequest) (*SearchResponse, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	var tok *searchToken
	if req.NextBatch != "" {
		var err error
		if tok, err = parseSearchToken(req.NextBatch); err != nil {
			return nil, err
		}
		if tok.Order != req.OrderBy {
			return nil, roomserver.InvalidParam("next_batch belongs to a search with order_by %q", tok.Order)
		}
	}
	resp := &SearchResponse{Highlights: []string{}, Results: []SearchResult{}}
	q := s.searchQuery(user, &req, tok)
	if len(q.Terms) == 0 {
		return resp, nil
	}
	rooms, count, err := s.searchRooms(ctx, user, &req, tok, q)
	if err != nil {
		return nil, err
	}
	if len(q.Ranges) == 0 {
		return resp, nil
	}
	resp.Count = count
	hits, cursor, err := s.searchPage(ctx, q, rooms)
	if err != nil {
		return nil, err
	}
	if err := s.renderSearch(ctx, &req, rooms, hits, resp); err != nil {
		return nil, err
	}
	if cursor != nil {
		next := searchToken{Order: req.OrderBy, Pos: cursor.Event.StreamPos}
		if q.ByRank {
			next.Rank = cursor.Rank
		}
		if tok != nil {
			next.Group, next.Value = tok.Group, tok.Value
		}
		resp.NextBatch = next.String()
		groupTokens(resp, hits, next)
	}
	resp.Highlights = highlights(q.Terms, hits)
	return resp, nil
}

// searchQuery builds the storage query from the request, without ranges.
func (s *Service) searchQuery(user id.UserID, req *SearchRequest, tok *searchToken) *storage.SearchQuery {
	q := &storage.SearchQuery{Terms: SearchTerms(req.Term), ByRank: req.OrderBy == "rank", Limit: DefaultSearchLimit}
	keys := req.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	for _, k := range keys {
		if t := storage.SearchKeyTypes[k]; !slices.Contains(q.Types, t) {
			q.Types = append(q.Types, t)
		}
	}
	if f := req.Filter; f != nil {
		q.Senders, q.NotSenders = f.Senders, f.NotSenders
		q.TypeFilter, q.NotTypeFilter = f.Types, f.NotTypes
		q.ContainsURL = f.ContainsURL
		if f.Limit > 0 {
			q.Limit = min(f.Limit, MaxSearchLimit)
		}
	}
	if tok != nil {
		q.After, q.AfterRank, q.AfterPos = true, tok.Rank, tok.Pos
		if tok.Group == "sender" {
			if q.Senders != nil && !slices.Contains(q.Senders, tok.Value) {
				q.Senders = []string{} // outside the filter: nothing
			} else {
				q.Senders = []string{tok.Value}
			}
		}
	}
	return q
}

// searchRooms sets q.Ranges to what the user may see of the rooms searched:
// the rooms they have a membership in (not forgotten), narrowed by the
// filter (and a room-scoped token); only rooms holding a match at all are
// looked at closely. It returns those rooms and the number of results.
func (s *Service) searchRooms(ctx context.Context, user id.UserID, req *SearchRequest, tok *searchToken, q *storage.SearchQuery) (map[id.RoomID]*searchRoom, int, error) {
	ms, err := s.db.RoomsOfUser(ctx, string(user))
	if err != nil {
		return nil, 0, err
	}
	f := req.Filter
	slices.Reverse(ms) // latest membership change first
	for _, m := range ms {
		if len(q.Ranges) >= maxSearchRanges {
			break
		}
		if f != nil && ((f.Rooms != nil && !slices.Contains(f.Rooms, m.RoomID)) || slices.Contains(f.NotRooms, m.RoomID)) {
			continue
		}
		if tok != nil && tok.Group == "room_id" && tok.Value != m.RoomID {
			continue
		}
		q.Ranges = append(q.Ranges, storage.SearchRange{RoomID: m.RoomID, From: -wholeHistory, To: wholeHistory})
	}
	if len(q.Ranges) == 0 {
		return nil, 0, nil
	}
	unranked := *q
	unranked.ByRank = false
	matched, err := s.db.SearchRooms(ctx, &unranked)
	if err != nil {
		return nil, 0, err
	}
	// Rooms whose whole history the user may see keep their count; the
	// others are counted again within what the user may see.
	count := 0
	partial := &storage.SearchQuery{}
	*partial = *q
	partial.Ranges, partial.ByRank = nil, false
	q.Ranges = nil
	rooms := map[id.RoomID]*searchRoom{}
	for r, n := range matched {
		roomID := id.RoomID(r)
		version, err := roomserver.RoomVersion(ctx, s.db, roomID)
		if err != nil {
			return nil, 0, err
		}
		v, err := s.viewer(ctx, roomID, user)
		if err != nil {
			return nil, 0, err
		}
		spans := v.hv.VisibleRanges()
		if len(q.Ranges)+len(spans) > maxSearchRanges {
			continue
		}
		rooms[roomID] = &searchRoom{version: version, v: v}
		if len(spans) == 1 && spans[0][0] <= -wholeHistory+1 && spans[0][1] >= wholeHistory-1 {
			count += n
			q.Ranges = append(q.Ranges, storage.SearchRange{RoomID: r, From: -wholeHistory, To: wholeHistory})
			continue
		}
		for _, span := range spans {
			rng := storage.SearchRange{RoomID: r, From: span[0], To: span[1]}
			q.Ranges = append(q.Ranges, rng)
			partial.Ranges = append(partial.Ranges, rng)
		}
	}
	if len(partial.Ranges) > 0 {
		n, err := s.db.CountSearch(ctx, partial)
		if err != nil {
			return nil, 0, err
		}
		count += n
	}
	return rooms, count, nil
}

// wholeHistory is the end of the range of every stream position.
const wholeHistory = int64(1) << 62 // backfilled history lies below 0, down to -wholeHistory

// searchPage reads one page of results the user may see. When more may
// follow (the page is full, or the rounds ran out), it returns the cursor
// after the last row read.
func (s *Service) searchPage(ctx context.Context, q *storage.SearchQuery, rooms map[id.RoomID]*searchRoom) ([]storage.SearchHit, *storage.SearchHit, error) {
	var out []storage.SearchHit
	limit := q.Limit
	var last storage.SearchHit
	for round := 0; round < maxSearchRounds && len(out) < limit; round++ {
		q.Limit = limit - len(out)
		hits, err := s.db.SearchEvents(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		for _, h := range hits {
			r := rooms[id.RoomID(h.Event.RoomID)]
			if r == nil || !r.v.canSee(h.Event.StreamPos) {
				continue
			}
			// An erased sender's event this user sees redacted matched on
			// content they may not read: left out.
			if erased, err := clientevent.HidesErased(ctx, s.db, r.v.client(), h.Event); err != nil {
				return nil, nil, err
			} else if !erased {
				out = append(out, h)
			}
		}
		if len(hits) < q.Limit {
			return out, nil, nil
		}
		last = hits[len(hits)-1]
		q.After, q.AfterRank, q.AfterPos = true, last.Rank, last.Event.StreamPos
	}
	q.Limit = limit
	return out, &last, nil
}

// renderSearch fills results, context, state and groups for the hits.
func (s *Service) renderSearch(ctx context.Context, req *SearchRequest, rooms map[id.RoomID]*searchRoom, hits []storage.SearchHit, resp *SearchResponse) error {
	byRoom := map[id.RoomID][]int{}
	for i, h := range hits {
		byRoom[id.RoomID(h.Event.RoomID)] = append(byRoom[id.RoomID(h.Event.RoomID)], i)
	}
	resp.Results = make([]SearchResult, len(hits))
	for roomID, idx := range byRoom {
		r := rooms[roomID]
		ses := make([]*storage.Event, len(idx))
		for j, i := range idx {
			ses[j] = hits[i].Event
		}
		evs, err := s.clientEvents(ctx, r.v, ses)
		if err != nil {
			return err
		}
		for j, i := range idx {
			resp.Results[i] = SearchResult{Rank: hits[i].Rank, Result: evs[j]}
		}
	}
	if req.Context != nil {
		for i, h := range hits {
			c, err := s.searchContext(ctx, req, rooms[id.RoomID(h.Event.RoomID)], h.Event)
			if err != nil {
				return err
			}
			resp.Results[i].Context = c
		}
	}
	if req.IncludeState && len(byRoom) > 0 {
		resp.State = map[id.RoomID][]json.RawMessage{}
		for roomID := range byRoom {
			r := rooms[roomID]
			entries, _, err := s.stateVisibleTo(ctx, roomID, r.v)
			if err != nil {
				return err
			}
			if resp.State[roomID], err = s.loadClientEvents(ctx, r.v, entries); err != nil {
				return err
			}
		}
	}
	for _, g := range req.GroupBy {
		if resp.Groups == nil {
			resp.Groups = map[string]map[string]*SearchResultGroup{}
		}
		groups := map[string]*SearchResultGroup{}
		for _, h := range hits {
			key := groupValue(g, h.Event)
			grp := groups[key]
			if grp == nil {
				grp = &SearchResultGroup{Order: len(groups) + 1, Results: []id.EventID{}}
				groups[key] = grp
			}
			grp.Results = append(grp.Results, id.EventID(h.Event.EventID))
		}
		resp.Groups[g] = groups
	}
	return nil
}

func groupValue(group string, se *storage.Event) string {
	if group == "sender" {
		return se.Sender
	}
	return se.RoomID
}

// groupTokens gives each group a next_batch continuing within that group
// from its last result on this page.
func groupTokens(resp *SearchResponse, hits []storage.SearchHit, next searchToken) {
	for g, groups := range resp.Groups {
		for _, h := range hits {
			t := searchToken{Order: next.Order, Pos: h.Event.StreamPos, Group: g, Value: groupValue(g, h.Event)}
			if next.Order == "rank" {
				t.Rank = h.Rank
			}
			groups[t.Value].NextBatch = t.String() // the group's last hit wins
		}
	}
}

// searchContext is the events around a result, read as /messages reads
// them (same visibility, filter and renderer), and the sender's profile then.
func (s *Service) searchContext(ctx context.Context, req *SearchRequest, r *searchRoom, se *storage.Event) (*SearchContext, error) {
	c := &SearchContext{EventsBefore: []json.RawMessage{}, EventsAfter: []json.RawMessage{}}
	roomID := id.RoomID(se.RoomID)
	filter := req.Filter
	if filter != nil {
		f := *filter
		f.LazyLoadMembers = false
		filter = &f
	}
	if n := req.Context.BeforeLimit; n > 0 {
		back, err := s.Messages(ctx, r.v.user, roomID, MessagesRequest{From: TopologicalToken(se.Depth, se.StreamPos-1), Dir: "b", Limit: n, Filter: filter})
		if err != nil {
			return nil, err
		}
		c.EventsBefore, c.Start = back.Chunk, back.End
	}
	if n := req.Context.AfterLimit; n > 0 {
		fwd, err := s.Messages(ctx, r.v.user, roomID, MessagesRequest{From: TopologicalToken(se.Depth, se.StreamPos), Dir: "f", Limit: n, Filter: filter})
		if err != nil {
			return nil, err
		}
		c.EventsAfter, c.End = fwd.Chunk, fwd.End
	}
	if req.Context.IncludeProfile {
		c.ProfileInfo = map[id.UserID]SearchProfile{}
		m, err := s.db.MemberEventBefore(ctx, se.RoomID, se.Sender, se.StreamPos)
		if err != nil && err != storage.ErrNotFound {
			return nil, err
		}
		var p SearchProfile
		if m != nil && r.v.canSee(m.StreamPos) {
			p.DisplayName = gjson.GetBytes(m.JSON, "content.displayname").Str
			p.AvatarURL = gjson.GetBytes(m.JSON, "content.avatar_url").Str
		}
		c.ProfileInfo[id.UserID(se.Sender)] = p
	}
	return c, nil
}

// highlights are the words to highlight in the results: the search's terms
// and the words of the results they matched (as prefixes), lower-cased.
func highlights(terms []string, hits []storage.SearchHit) []string {
	out := slices.Clone(terms)
	for _, h := range hits {
		content := gjson.GetBytes(h.Event.JSON, "content")
		text := content.Get("body").Str + " " + content.Get("name").Str + " " + content.Get("topic").Str
		for _, w := range words(text) {
			if len(out) >= 50 {
				return out
			}
			if !slices.Contains(out, w) && slices.ContainsFunc(terms, func(t string) bool { return strings.HasPrefix(w, t) }) {
				out = append(out, w)
			}
		}
	}
	return out
}
