// Package slidingsync answers simplified sliding sync (MSC4186), the sync
// Element X uses: POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync.
//
// It reads through the same building blocks as GET /sync (clientapi/syncv2):
// memberships, room events with history visibility, rendering, stripped
// state, the notifier long-poll. What is sliding-sync-specific is the room
// list (sorted by recency, filtered and windowed by ranges), the per-connection
// memory of what each room was sent, and the extensions' response shapes.
package slidingsync

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"sort"
	"strconv"
	"time"

	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/clientapi/syncv2"
	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/push"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what sliding sync reads directly; *storage.DB satisfies it.
type Store interface {
	RoomEventsRange(ctx context.Context, roomID string, from, to int64, limit int) ([]*storage.Event, bool, error)
	LatestEventPositions(ctx context.Context, bounds map[string]int64) (map[string]int64, error)
	StateAtPosition(ctx context.Context, roomID string, pos int64) (storage.StateMap, error)
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	EventsInStreamOrder(ctx context.Context, ids []string) ([]*storage.Event, error)
	RoomMembersSummaryAt(ctx context.Context, roomID string, at int64) (joined, invited []string, err error)
	AccountDataSince(ctx context.Context, userID string, from, to int64) ([]storage.AccountData, error)
	ReceiptsInRange(ctx context.Context, userID string, from, to int64) ([]storage.Receipt, error)
	RoomReceipts(ctx context.Context, roomID string, to int64) ([]storage.Receipt, error)
}

// maxTimeout caps a long-poll, as for GET /sync.
const maxTimeout = 5 * time.Minute

// Syncer is what sliding sync builds on from GET /sync (syncv2.Syncer):
// the read position, memberships, stripped state and per-room viewers.
type Syncer interface {
	Current() syncv2.Token
	Memberships(ctx context.Context, userID string, to int64) (map[string]*syncv2.Membership, error)
	StrippedState(ctx context.Context, roomID string, m *syncv2.Membership) ([]json.RawMessage, error)
	Viewer(userID, deviceID, roomID string, m *syncv2.Membership) *syncv2.Viewer
}

// Ephemeral is what sliding sync reads of typing, and how it marks the
// syncing user present (ephemeral.Service).
type Ephemeral interface {
	TypingSince(roomID string, serial int64) (users []string, changed bool)
	SetPresence(ctx context.Context, userID, state string, statusMsg *string, setMsg bool) error
}

// Push is what sliding sync reads of push rules and unread counts (push.Service).
type Push interface {
	PushRules(ctx context.Context, userID string) (push.Rules, int64, error)
	PushRuleset(ctx context.Context, userID string) (*pushrules.PushRuleset, int64, error)
	UnreadCounts(ctx context.Context, userID, roomID string, upTo int64, rules *pushrules.PushRuleset, rulesPos int64,
		threaded bool, recent []*storage.Event, recentFrom int64) (push.Counts, map[string]push.Counts, error)
	UnreadCountsInRooms(ctx context.Context, userID string, roomIDs []string, upTo int64, rules *pushrules.PushRuleset,
		rulesPos int64, threaded bool) (map[string]push.RoomCounts, error)
}

// Notifier is what a long-poll waits on (internal/notifier), as for GET /sync.
type Notifier interface {
	WakeMark() uint64
	WaitMarked(ctx context.Context, user string, after int64, mark uint64) bool
}

// Handler serves sliding sync.
type Handler struct {
	syncer    Syncer
	store     Store
	ephemeral Ephemeral
	push      Push
	notifier  Notifier
	keys      syncv2.Keys // nil: no to_device or e2ee extension data
	conns     *connections
}

// Options are what the handler is built from.
type Options struct {
	// Syncer builds the rooms' timelines and state as GET /sync does.
	Syncer    Syncer
	Store     Store
	Ephemeral Ephemeral   // typing, presence
	Push      Push        // push rules, unread counts
	Notifier  Notifier    // long-polls wait on it
	Keys      syncv2.Keys // nil: no to_device or e2ee extension data
}

// New builds the handler.
func New(o Options) *Handler {
	return &Handler{syncer: o.Syncer, store: o.Store, ephemeral: o.Ephemeral, push: o.Push, notifier: o.Notifier, keys: o.Keys,
		conns: newConnections(defaultMaxConns, defaultConnTTL)}
}

// ServeHTTP answers POST .../org.matrix.simplified_msc3575/sync.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp, err := h.handle(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

func (h *Handler) handle(r *http.Request) (*response, error) {
	ctx := r.Context()
	dev := authn.FromContext(ctx)
	userID, deviceID := dev.UserID.String(), dev.DeviceID.String()
	var req request
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	pos := q.Get("pos")
	if pos == "" && req.Pos != nil {
		pos = *req.Pos
	}
	timeout := time.Duration(0)
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return nil, mxhttp.InvalidParam("timeout must be a non-negative integer (milliseconds)")
		}
		timeout = time.Duration(ms) * time.Millisecond
	} else if req.Timeout != nil {
		if *req.Timeout < 0 {
			return nil, mxhttp.InvalidParam("timeout must not be negative")
		}
		timeout = time.Duration(*req.Timeout) * time.Millisecond
	}
	timeout = min(timeout, maxTimeout)
	presence := q.Get("set_presence")
	if presence == "" && req.SetPresence != nil {
		presence = *req.SetPresence
	}
	if presence == "" {
		presence = ephemeral.PresenceOnline
	}
	if !ephemeral.ValidPresence(presence) {
		return nil, mxhttp.InvalidParam("set_presence must be online, offline or unavailable")
	}

	key := connKey(userID, deviceID, req.ConnID)
	prev := &snapshot{rooms: map[string]roomSent{}, counts: map[string]int{}}
	prevExists := false
	if pos != "" {
		snap := h.conns.get(key, pos)
		if snap == nil {
			return nil, errUnknownPos("Unknown or expired pos; start a new connection")
		}
		prev, prevExists = snap, true
	}
	if presence != ephemeral.PresenceOffline {
		if err := h.ephemeral.SetPresence(ctx, userID, presence, nil, false); err != nil {
			return nil, err
		}
	}
	b := &builder{h: h, req: &req, userID: userID, deviceID: deviceID, prev: prev, prevExists: prevExists}
	b.subs, b.reqs = nextSubscriptions(prev, &req)
	resp, next, err := h.sync(ctx, b, timeout)
	if err != nil {
		return nil, err
	}
	resp.Pos = h.conns.put(key, next, !prevExists)
	resp.TxnID = req.TxnID
	return resp, nil
}

// sync builds the answer at once, or long-polls until there is something
// for a continuing connection (like GET /sync).
func (h *Handler) sync(ctx context.Context, b *builder, timeout time.Duration) (*response, *snapshot, error) {
	n := h.notifier
	mark := n.WakeMark()
	to := h.syncer.Current()
	resp, next, err := b.build(ctx, to)
	if err != nil || !b.prevExists || timeout == 0 || b.hasUpdates(resp) {
		return resp, next, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if !n.WaitMarked(ctx, b.userID, to.Pos, mark) {
			return resp, next, nil
		}
		mark = n.WakeMark()
		cur := h.syncer.Current()
		if cur == to {
			continue
		}
		r, nx, err := b.build(ctx, cur)
		if err != nil {
			if ctx.Err() != nil {
				return resp, next, nil // timed out mid-build: answer with what we had
			}
			return nil, nil, err
		}
		resp, next, to = r, nx, cur
		if b.hasUpdates(resp) {
			return resp, next, nil
		}
	}
}

// builder builds one response against the connection's previous snapshot.
type builder struct {
	h                *Handler
	req              *request
	userID, deviceID string
	prev             *snapshot
	prevExists       bool
	subs             map[string]subscription // in force for this request (nextSubscriptions)
	reqs             uint64

	// Per build:
	to        syncv2.Token
	next      *snapshot
	mems      map[string]*syncv2.Membership
	facts     map[string]*roomFacts
	spaces    map[string]map[string]bool // children of each space read (spaceChildren)
	keys      map[string]string          // interned config keys (stateKey)
	readRooms map[string]bool            // rooms where the user's own receipt moved since the last answer
	dmRooms   map[string]bool
	tags      map[string]map[string]bool
	acct      []storage.AccountData
	ruleset   *pushrules.PushRuleset
	rulesPos  int64
	toDevice  int64 // the to-device since the answer acknowledges (extension state)
}

// since is the stream position the connection was last answered at (0: new).
func (b *builder) since() int64 {
	if !b.prevExists {
		return 0
	}
	return b.prev.tok.Pos
}

func (b *builder) build(ctx context.Context, to syncv2.Token) (*response, *snapshot, error) {
	b.to = to
	b.next = &snapshot{tok: to, rooms: maps.Clone(b.prev.rooms), counts: map[string]int{}, toDevAck: b.prev.toDevAck,
		subs: b.subs, reqs: b.reqs}
	b.facts = map[string]*roomFacts{}
	b.spaces = map[string]map[string]bool{}
	b.keys = map[string]string{}
	var err error
	if b.mems, err = b.h.syncer.Memberships(ctx, b.userID, to.Pos); err != nil {
		return nil, nil, err
	}
	b.readRooms = map[string]bool{}
	if b.prevExists {
		rs, err := b.h.store.ReceiptsInRange(ctx, b.userID, b.since(), to.Pos)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range rs {
			if r.UserID == b.userID {
				b.readRooms[r.RoomID] = true
			}
		}
	}
	if b.acct, err = b.h.store.AccountDataSince(ctx, b.userID, 0, to.Pos); err != nil {
		return nil, nil, err
	}
	b.dmRooms, b.tags = map[string]bool{}, map[string]map[string]bool{}
	for _, a := range b.acct {
		switch {
		case a.RoomID == "" && a.Type == "m.direct":
			var direct map[string][]string
			_ = json.Unmarshal(a.Content, &direct)
			for _, rooms := range direct {
				for _, r := range rooms {
					b.dmRooms[r] = true
				}
			}
		case a.RoomID != "" && a.Type == "m.tag":
			var tags struct {
				Tags map[string]json.RawMessage `json:"tags"`
			}
			_ = json.Unmarshal(a.Content, &tags)
			set := map[string]bool{}
			for t := range tags.Tags {
				set[t] = true
			}
			b.tags[a.RoomID] = set
		}
	}
	if b.ruleset, b.rulesPos, err = b.h.push.PushRuleset(ctx, b.userID); err != nil {
		return nil, nil, err
	}

	list, err := b.roomList(ctx)
	if err != nil {
		return nil, nil, err
	}
	resp := &response{Lists: map[string]listResult{}, Rooms: map[string]*roomResult{}, Extensions: map[string]any{}}
	configs := map[string]*combined{}
	listsOf := map[string][]string{}
	byID := map[string]*candidate{}
	for _, c := range list {
		byID[c.roomID] = c
	}
	for _, name := range sortedKeys(b.req.Lists) {
		l := b.req.Lists[name]
		kids, err := b.listChildren(ctx, l.Filters.Spaces)
		if err != nil {
			return nil, nil, err
		}
		idx := 0
		for _, c := range list {
			ok, err := b.filterMatch(ctx, l.Filters, kids, c)
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				continue
			}
			if inRanges(l.Ranges, idx) {
				cfg := configs[c.roomID]
				if cfg == nil {
					cfg = &combined{}
					configs[c.roomID] = cfg
				}
				cfg.add(l.roomConfig)
				listsOf[c.roomID] = append(listsOf[c.roomID], name)
			}
			idx++
		}
		resp.Lists[name] = listResult{Count: idx}
		b.next.counts[name] = idx
	}
	for roomID, sub := range b.subs {
		c := byID[roomID]
		if c == nil {
			// Not in the list (e.g. left by themselves): still visible if
			// the user was ever joined, or is invited or knocking. A room
			// whose invite or knock ended without a join shows nothing
			// more: ignored, as the MSC says of rooms the user may not see.
			m, ok := b.mems[roomID]
			if !ok {
				continue // never a member
			}
			c = b.candidate(roomID, m)
			if c.retired {
				continue
			}
			byID[roomID] = c
		}
		cfg := configs[roomID]
		if cfg == nil {
			cfg = &combined{}
			configs[roomID] = cfg
		}
		cfg.add(sub.cfg)
	}
	if err := b.warmUnreadCounts(ctx, configs, byID); err != nil {
		return nil, nil, err
	}
	for _, roomID := range sortedKeys(configs) {
		res, err := b.roomResult(ctx, byID[roomID], configs[roomID])
		if err != nil {
			return nil, nil, err
		}
		if res != nil {
			res.Lists = listsOf[roomID]
			resp.Rooms[roomID] = res
		}
	}
	if err := b.extensions(ctx, resp, configs, listsOf); err != nil {
		return nil, nil, err
	}
	return resp, b.next, nil
}

// nextSubscriptions are the connection's room subscriptions once req is
// applied to the previous snapshot's: unsubscribe_rooms removes, then
// room_subscriptions adds or replaces. Beyond maxSubscriptions, those given
// least recently are dropped (never one of this request's).
func nextSubscriptions(prev *snapshot, req *request) (map[string]subscription, uint64) {
	reqs := prev.reqs + 1
	subs := maps.Clone(prev.subs)
	if subs == nil {
		subs = map[string]subscription{}
	}
	for _, roomID := range req.UnsubscribeRooms {
		delete(subs, roomID)
	}
	for roomID, cfg := range req.RoomSubscriptions {
		subs[roomID] = subscription{cfg: cfg, last: reqs}
	}
	if len(subs) > maxSubscriptions {
		ids := sortedKeys(subs)
		sort.SliceStable(ids, func(i, j int) bool { return subs[ids[i]].last < subs[ids[j]].last })
		for _, roomID := range ids[:len(subs)-maxSubscriptions] {
			delete(subs, roomID)
		}
	}
	return subs, reqs
}

func inRanges(ranges [][]int64, i int) bool {
	if ranges == nil {
		return true // no range: the whole list
	}
	for _, r := range ranges {
		if int64(i) >= r[0] && int64(i) <= r[1] {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortStrings(keys)
	return keys
}

// hasUpdates reports whether a continuing connection's answer carries
// anything (key counts alone do not count).
func (b *builder) hasUpdates(resp *response) bool {
	if len(resp.Rooms) > 0 {
		return true
	}
	for name, l := range resp.Lists {
		if old, ok := b.prev.counts[name]; !ok || old != l.Count {
			return true
		}
	}
	for _, ext := range resp.Extensions {
		if e, ok := ext.(interface{ hasData() bool }); ok && e.hasData() {
			return true
		}
	}
	return false
}
