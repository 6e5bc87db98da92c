package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/storage"
)

// Presence between servers, as Synapse's peers expect (its handlers/presence.py):
//
//   - A server marks a remote user offline when it has heard nothing of them
//     for FederationTimeout, so each server re-sends the presence of its
//     users who are not offline every FederationPingInterval (pingPresence).
//   - We do the same to remote users (expireRemotePresence): a sweep stores
//     offline at a new stream position and wakes the local users sharing a
//     room, because /sync's presence stream only carries changes after the
//     client's token: expiring on read would leave a client that already
//     saw "online" showing it for ever.
//   - A server that starts sharing a room with our users is told their
//     presence at once (PresenceOnJoin, a stream follower), not 25 minutes
//     later.
const (
	FederationPingInterval = 25 * time.Minute
	FederationTimeout      = 30 * time.Minute
	// maxPingUsers bounds the local users one ping tick re-sends (the most
	// overdue first; the rest go on the next tick). A tick comes every fifth
	// of the ping interval, so 25,000 users online stay within the timeout.
	maxPingUsers = 5000
	// maxExpireUsers bounds the remote users one sweep stores as offline
	// (the rest on the next sweep, a tenth of the timeout later).
	maxExpireUsers = 5000
	// maxHeldPresence and heldPresenceFor bound the presence held for users
	// sharing no room with ours yet (see holdPresence).
	maxHeldPresence = 1000
	heldPresenceFor = time.Minute
	// PresenceJoinFollower names the stream cursor of PresenceOnJoin's follower.
	PresenceJoinFollower = "ephemeral_presence_joins"
)

// startFederationPresence arms the ping and the remote expiry timers (with
// presence on): one timer each, re-armed after each run, nothing when idle.
func (s *Service) startFederationPresence() {
	s.fedMu.Lock()
	defer s.fedMu.Unlock()
	if s.edus != nil {
		s.pingTimer = time.AfterFunc(s.pingEvery/5, recovery.Func(recovery.PresenceTimer, s.pingPresence))
	}
	s.expireTimer = time.AfterFunc(s.remoteTimeout/10, recovery.Func(recovery.PresenceTimer, s.expireRemotePresence))
}

// SetFederationPresenceTimeouts changes the ping interval and the remote
// timeout (tests) and re-arms both timers at the new pace.
func (s *Service) SetFederationPresenceTimeouts(ping, remoteTimeout time.Duration) {
	s.fedMu.Lock()
	defer s.fedMu.Unlock()
	s.pingEvery, s.remoteTimeout = ping, remoteTimeout
	if s.pingTimer != nil {
		s.pingTimer.Reset(ping / 5)
	}
	if s.expireTimer != nil {
		s.expireTimer.Reset(remoteTimeout / 10)
	}
}

// rearm re-arms t after d unless the module is closed.
func (s *Service) rearm(t func() *time.Timer, d func() time.Duration) {
	s.fedMu.Lock()
	defer s.fedMu.Unlock()
	if !s.fedClosed && t() != nil {
		t().Reset(d())
	}
}

// stopFederationPresence stops both timers (Close).
func (s *Service) stopFederationPresence() {
	s.fedMu.Lock()
	defer s.fedMu.Unlock()
	s.fedClosed = true
	for _, t := range []*time.Timer{s.pingTimer, s.expireTimer} {
		if t != nil {
			t.Stop()
		}
	}
}

// heardRemote records that a remote user's server just told us their
// presence: not offline, the expiry counts from now; offline, nothing to expire.
func (s *Service) heardRemote(userID, state string, at time.Time) {
	s.fedMu.Lock()
	defer s.fedMu.Unlock()
	if state == PresenceOffline {
		delete(s.remoteHeard, userID)
	} else {
		s.remoteHeard[userID] = at
	}
}

// sentLocal records that our users' presence just went to the servers
// sharing a room with them: the next ping is due a ping interval later.
func (s *Service) sentLocal(at time.Time, users ...string) {
	s.fedMu.Lock()
	defer s.fedMu.Unlock()
	for _, u := range users {
		s.localSent[u] = at
	}
}

// pingPresence re-sends the presence of our tracked users (not offline:
// those with a decay timer) whose last send is a ping interval old, most
// overdue first, at most maxPingUsers, batched per destination.
func (s *Service) pingPresence() {
	defer s.rearm(func() *time.Timer { return s.pingTimer }, func() time.Duration { return s.pingEvery / 5 })
	now := time.Now()
	s.presenceMu.Lock()
	tracked := make(map[string]bool, len(s.activity))
	for u := range s.activity {
		tracked[u] = true
	}
	s.presenceMu.Unlock()
	s.fedMu.Lock()
	for u := range s.localSent {
		if !tracked[u] { // gone offline: nothing to ping
			delete(s.localSent, u)
		}
	}
	var due []string
	for u := range tracked {
		if now.Sub(s.localSent[u]) >= s.pingEvery {
			due = append(due, u)
		}
	}
	slices.SortFunc(due, func(a, b string) int { return s.localSent[a].Compare(s.localSent[b]) })
	s.fedMu.Unlock()
	if len(due) > maxPingUsers {
		due = due[:maxPingUsers]
	}
	if len(due) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := s.db.PresenceSince(ctx, due, 0, math.MaxInt64)
	if err != nil {
		slog.Warn("presence ping: reading presence", "err", err)
		return
	}
	byDest := map[string][]storage.Presence{}
	for _, p := range rows {
		if p.State == PresenceOffline {
			continue
		}
		servers, err := s.rooms.ServersSharingRoomsWith(ctx, p.UserID)
		if err != nil {
			slog.Warn("presence ping: listing the servers sharing rooms", "user", p.UserID, "err", err)
			return
		}
		for _, srv := range s.others(servers) {
			byDest[srv] = append(byDest[srv], p)
		}
	}
	s.sentLocal(now, due...)
	s.queuePresence(ctx, byDest)
}

// expireRemotePresence stores as offline the remote users whose server has
// told us nothing of them for the remote timeout (at most maxExpireUsers a
// sweep), waking the local users sharing a room with them.
func (s *Service) expireRemotePresence() {
	defer s.rearm(func() *time.Timer { return s.expireTimer }, func() time.Duration { return s.remoteTimeout / 10 })
	s.fedMu.Lock()
	timeout := s.remoteTimeout
	var expired []string
	for u, at := range s.remoteHeard {
		if time.Since(at) >= timeout {
			expired = append(expired, u)
			if len(expired) == maxExpireUsers {
				break
			}
		}
	}
	s.fedMu.Unlock()
	ctx := context.Background()
	for _, u := range expired {
		old, err := s.db.GetPresence(ctx, u)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			slog.Warn("presence expiry: reading presence", "user", u, "err", err)
			return
		}
		s.fedMu.Lock()
		at, ok := s.remoteHeard[u]
		stale := ok && time.Since(at) >= timeout
		if stale || old == nil || old.State == PresenceOffline {
			delete(s.remoteHeard, u)
		}
		s.fedMu.Unlock()
		if !stale || old == nil || old.State == PresenceOffline {
			continue // heard again meanwhile, or nothing to expire
		}
		if err := s.storePresence(ctx, old, storage.Presence{UserID: u, State: PresenceOffline,
			StatusMsg: old.StatusMsg, LastActiveTS: old.LastActiveTS}); err != nil {
			slog.Warn("presence expiry: storing offline", "user", u, "err", err)
			return
		}
	}
}

// updateOf is the m.presence push entry of a stored presence row.
func (s *Service) updateOf(p storage.Presence) presenceUpdate {
	u := presenceUpdate{UserID: p.UserID, Presence: p.State, StatusMsg: p.StatusMsg,
		CurrentlyActive: p.State == PresenceOnline && p.CurrentlyActive}
	if t := s.lastActive(p.UserID); !t.IsZero() && t.UnixMilli() > p.LastActiveTS {
		p.LastActiveTS = t.UnixMilli()
	}
	if p.LastActiveTS > 0 {
		u.LastActiveAgo = max(time.Now().UnixMilli()-p.LastActiveTS, 0)
	}
	return u
}

// queuePresence queues the presence rows of byDest (destination → rows) as
// ephemeral m.presence EDUs of at most MaxPresencePush users each; the
// destinations receiving the same users share one queue call.
func (s *Service) queuePresence(ctx context.Context, byDest map[string][]storage.Presence) {
	if s.edus == nil || len(byDest) == 0 {
		return
	}
	type group struct {
		rows  []storage.Presence
		dests []string
	}
	groups := map[string]*group{}
	for _, dest := range sortedKeys(byDest) {
		rows := byDest[dest]
		slices.SortFunc(rows, func(a, b storage.Presence) int { return strings.Compare(a.UserID, b.UserID) })
		rows = slices.CompactFunc(rows, func(a, b storage.Presence) bool { return a.UserID == b.UserID })
		ids := make([]string, len(rows))
		for i, p := range rows {
			ids[i] = p.UserID
		}
		key := strings.Join(ids, "\x00")
		if groups[key] == nil {
			groups[key] = &group{rows: rows}
		}
		groups[key].dests = append(groups[key].dests, dest)
	}
	for _, g := range groups {
		for chunk := range slices.Chunk(g.rows, MaxPresencePush) {
			edu := presenceEDU{Push: make([]presenceUpdate, len(chunk))}
			for i, p := range chunk {
				edu.Push[i] = s.updateOf(p)
			}
			content, err := json.Marshal(edu)
			if err != nil {
				slog.Warn("presence: encoding the EDU", "err", err)
				return
			}
			if err := s.edus.QueueEDU(ctx, g.dests, EDUPresence, content, true); err != nil {
				slog.Warn("presence: queueing the EDU", "destinations", len(g.dests), "err", err)
			}
		}
	}
}

// PresenceOnJoin is the handler of a stream follower (homeserver): when a
// server starts sharing a room with our users it is told their presence at
// once, as Synapse does, rather than at the next ping. A remote user's join
// sends their server the presence of the room's local members who are not
// offline (at most the room's local members, in EDUs of MaxPresencePush);
// our user's join sends their presence to the room's other servers. A
// profile change (join over join) sends nothing.
func (s *Service) PresenceOnJoin(ctx context.Context, events []*storage.Event) error {
	if !s.presenceEnabled || s.edus == nil {
		return nil
	}
	done := map[string]bool{} // room + server already told in this page
	for _, ev := range events {
		if ev.Outlier || ev.SoftFailed || ev.Type != "m.room.member" || ev.Membership != "join" || ev.StateKey == nil {
			continue
		}
		rejoin, err := s.wasJoined(ctx, ev)
		if err != nil {
			return err
		}
		if rejoin {
			continue
		}
		user := *ev.StateKey
		server := id.UserID(user).Homeserver()
		if server == "" || done[ev.RoomID+"\x00"+server] {
			continue
		}
		done[ev.RoomID+"\x00"+server] = true
		if err := s.presenceOnJoin(ctx, ev.RoomID, user, server); err != nil {
			return fmt.Errorf("presence on %s's join to %s: %w", user, ev.RoomID, err)
		}
	}
	return nil
}

// presenceOnJoin sends what user's join to roomID makes new to the servers.
func (s *Service) presenceOnJoin(ctx context.Context, roomID, user, server string) error {
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	var ours, dests []string
	if s.isLocal(user) {
		ours, dests = []string{user}, s.others(servers)
		if err := s.applyHeld(ctx, dests); err != nil {
			return err
		}
	} else {
		if !slices.Contains(servers, server) {
			return nil // left again since: nobody to tell
		}
		members, err := s.rooms.JoinedMembers(ctx, roomID)
		if err != nil {
			return err
		}
		ours, dests = slices.DeleteFunc(members, func(u string) bool { return !s.isLocal(u) }), []string{server}
	}
	if len(ours) == 0 || len(dests) == 0 {
		return nil
	}
	rows, err := s.db.PresenceSince(ctx, ours, 0, math.MaxInt64)
	if err != nil {
		return err
	}
	rows = slices.DeleteFunc(rows, func(p storage.Presence) bool { return p.State == PresenceOffline })
	byDest := map[string][]storage.Presence{}
	for _, d := range dests {
		byDest[d] = rows
	}
	if len(rows) > 0 {
		s.queuePresence(ctx, byDest)
	}
	return nil
}

// wasJoined reports whether a join event replaced a join (a profile change).
func (s *Service) wasJoined(ctx context.Context, ev *storage.Event) (bool, error) {
	if ev.ReplacesState == "" {
		return false, nil
	}
	prev, err := s.rooms.GetEvent(ctx, ev.ReplacesState)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return prev.Membership == "join", nil
}

// heldPresence is a remote user's presence that came when they shared no
// room with our users.
type heldPresence struct {
	u  presenceUpdate
	at time.Time
}

// holdPresence keeps, for heldPresenceFor, the presence of a remote user who
// shares no room with ours (at most maxHeldPresence users): the server of a
// room our user is joining sends its members' presence as soon as it has
// taken the join, often before our side of the join is stored, and would
// not send it again for 25 minutes. applyHeld takes it once the join is in.
func (s *Service) holdPresence(u presenceUpdate) {
	s.fedMu.Lock()
	defer s.fedMu.Unlock()
	now := time.Now()
	if _, ok := s.held[u.UserID]; !ok && len(s.held) >= maxHeldPresence {
		for k, h := range s.held {
			if now.Sub(h.at) >= heldPresenceFor {
				delete(s.held, k)
			}
		}
		if len(s.held) >= maxHeldPresence {
			return
		}
	}
	s.held[u.UserID] = heldPresence{u: u, at: now}
}

// applyHeld stores the held presence of the users of servers who now share
// a room with ours (our user's join to a room of theirs is in).
func (s *Service) applyHeld(ctx context.Context, servers []string) error {
	s.fedMu.Lock()
	var take []presenceUpdate
	now := time.Now()
	for k, h := range s.held {
		switch {
		case now.Sub(h.at) >= heldPresenceFor:
			delete(s.held, k)
		case slices.Contains(servers, id.UserID(k).Homeserver()):
			delete(s.held, k)
			take = append(take, h.u)
		}
	}
	s.fedMu.Unlock()
	for _, u := range take {
		why, err := s.sharesRoomWithOurs(ctx, u.UserID)
		if err != nil {
			return err
		}
		if why != "" {
			continue
		}
		if err := s.storeRemotePresence(ctx, u); err != nil {
			return err
		}
		s.heardRemote(u.UserID, u.Presence, now)
	}
	return nil
}
