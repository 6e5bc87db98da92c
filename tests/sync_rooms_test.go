package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSyncChainsSeeEveryEventOnce is a property test: while several users
// send concurrently, many incremental sync chains (starting at different
// points, with different timeline limits) each see every event after their
// start exactly once and in the server's order. A limited timeline is filled
// in from prev_batch with /messages, as clients do.
func TestSyncChainsSeeEveryEventOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		const senders, perSender, chains = 4, 25, 12
		owner := srv.Register(t, "owner")
		var users []*mautrix.Client
		for i := 0; i < senders; i++ {
			users = append(users, srv.Register(t, fmt.Sprintf("sender%d", i)))
		}
		watcher := srv.Register(t, "watcher")
		room := shareRoom(t, owner, append(users, watcher)...)
		start := syncOnce(t, watcher, "", "", 0)

		type result struct {
			seen []id.EventID
			err  error
		}
		stop := make(chan struct{})
		results := make([]result, chains)
		var mu sync.Mutex
		progress := make([]id.EventID, chains) // last event each chain saw
		var wg sync.WaitGroup
		rng := rand.New(rand.NewPCG(1, 2))
		for c := 0; c < chains; c++ {
			limit := []int{1, 3, 10, 50}[c%4]
			delay := time.Duration(rng.IntN(30)) * time.Millisecond
			wg.Add(1)
			go func(c, limit int, delay time.Duration) {
				defer wg.Done()
				filter := fmt.Sprintf(`{"room":{"timeline":{"limit":%d}}}`, limit)
				since := start.NextBatch
				var seen []id.EventID
				for {
					select {
					case <-stop:
						results[c] = result{seen: seen}
						return
					default:
					}
					time.Sleep(delay)
					resp, err := watcher.SyncRequest(ctx, 1000, since, filter, false, event.PresenceOnline)
					if err != nil {
						results[c] = result{err: err}
						return
					}
					if jr := resp.Rooms.Join[room]; jr != nil {
						if jr.Timeline.Limited {
							gap, err := syncFillGap(ctx, watcher, room, jr.Timeline.PrevBatch, since)
							if err != nil {
								results[c] = result{err: err}
								return
							}
							seen = append(seen, gap...)
						}
						seen = append(seen, syncTimelineIDs(jr)...)
						mu.Lock()
						progress[c] = syncTail(seen)
						mu.Unlock()
					}
					since = resp.NextBatch
				}
			}(c, limit, delay)
		}
		var sent sync.WaitGroup
		for _, u := range users {
			sent.Add(1)
			go func(u *mautrix.Client) {
				defer sent.Done()
				for i := 0; i < perSender; i++ {
					if _, err := u.SendText(ctx, room, fmt.Sprintf("%s %d", u.UserID, i)); err != nil {
						t.Errorf("send: %v", err)
						return
					}
				}
			}(u)
		}
		sent.Wait()
		// The server's order: the room's timeline after the start token.
		want, err := syncFillGap(ctx, watcher, room, "", start.NextBatch)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) != senders*perSender {
			t.Fatalf("/messages lists %d events after the start, want %d", len(want), senders*perSender)
		}
		// Let every chain catch up with the last event, then stop them.
		last := want[len(want)-1]
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			mu.Lock()
			caught := 0
			for _, l := range progress {
				if l == last {
					caught++
				}
			}
			mu.Unlock()
			if caught == chains {
				break
			}
		}
		close(stop)
		wg.Wait()
		for c, r := range results {
			if r.err != nil {
				t.Fatalf("chain %d: %v", c, r.err)
			}
			if !slices.Equal(r.seen, want) {
				t.Errorf("chain %d saw %d events (last %v), want %d ending %s; first difference at %d",
					c, len(r.seen), syncTail(r.seen), len(want), last, syncFirstDiff(r.seen, want))
			}
		}
	})
}

func syncTail(ids []id.EventID) id.EventID {
	if len(ids) == 0 {
		return ""
	}
	return ids[len(ids)-1]
}

func syncFirstDiff(a, b []id.EventID) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// fillGap pages /messages backwards from `from` (the latest point when "")
// down to the sync token `to`, returning the events oldest first.
func syncFillGap(ctx context.Context, c *mautrix.Client, room id.RoomID, from, to string) ([]id.EventID, error) {
	var rev []id.EventID
	for {
		resp, err := c.Messages(ctx, room, from, to, mautrix.DirectionBackward, nil, 20)
		if err != nil {
			return nil, err
		}
		for _, e := range resp.Chunk {
			rev = append(rev, e.ID)
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	slices.Reverse(rev)
	return rev, nil
}

// TestLongPollWakesOnSend: a waiting /sync returns with another user's message
// well before its timeout.
func TestLongPollWakesOnSend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		first := syncOnce(t, bob, "", "", 0)
		got := make(chan *mautrix.RespSync, 1)
		go func() {
			resp, err := bob.SyncRequest(context.Background(), 60000, first.NextBatch, "", false, event.PresenceOnline)
			if err != nil {
				t.Error(err)
			}
			got <- resp
		}()
		time.Sleep(200 * time.Millisecond) // let the long-poll start waiting
		ev := sendText(t, alice, room, "wake up")
		resp := <-got
		if resp == nil || resp.Rooms.Join[room] == nil || !syncHasEvent(resp.Rooms.Join[room].Timeline.Events, ev) {
			t.Fatalf("long-poll returned without the message: %+v", resp)
		}
	})
}

// TestLimitedTimelinePrevBatch: prev_batch of a limited timeline leads
// /messages to exactly the events the sync left out.
func TestLimitedTimelinePrevBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		first := syncOnce(t, bob, "", "", 0)
		var sent []id.EventID
		for i := 0; i < 30; i++ {
			sent = append(sent, sendText(t, alice, room, fmt.Sprint(i)))
		}
		resp := syncOnce(t, bob, first.NextBatch, `{"room":{"timeline":{"limit":5}}}`, 0)
		jr := resp.Rooms.Join[room]
		if jr == nil || !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
			t.Fatalf("timeline not limited: %+v", jr)
		}
		if got := syncTimelineIDs(jr); !slices.Equal(got, sent[25:]) {
			t.Fatalf("timeline = %v, want the last 5 sent", got)
		}
		missing, err := syncFillGap(context.Background(), bob, room, jr.Timeline.PrevBatch, first.NextBatch)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(missing, sent[:25]) {
			t.Fatalf("/messages from prev_batch gave %d events, want exactly the 25 missing", len(missing))
		}
	})
}

// TestLazyLoadMembers: with lazy_load_members the state carries the member
// events of the timeline's senders (and the user's own), not everyone's.
func TestLazyLoadMembers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob, carol, dave := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol"), srv.Register(t, "dave")
		room := shareRoom(t, alice, bob, carol, dave)
		for i := 0; i < 3; i++ {
			sendText(t, carol, room, fmt.Sprint(i))
		}
		resp := syncOnce(t, dave, "", `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`, 0)
		jr := resp.Rooms.Join[room]
		if jr == nil {
			t.Fatal("room missing")
		}
		members := map[string]bool{}
		for _, e := range jr.State.Events {
			if e.Type == event.StateMember {
				members[e.GetStateKey()] = true
			}
		}
		if !members[carol.UserID.String()] || !members[dave.UserID.String()] {
			t.Fatalf("lazy members %v lack the sender or the user", members)
		}
		if members[bob.UserID.String()] {
			t.Fatalf("lazy members include bob, who sent nothing in the timeline: %v", members)
		}
		if jr.Summary.JoinedMemberCount == nil || *jr.Summary.JoinedMemberCount != 4 {
			t.Fatalf("summary = %+v", jr.Summary)
		}
		// Incrementally: carol's member event is not sent again, bob's comes with his first message.
		lazy := `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`
		sendText(t, carol, room, "again")
		bobMsg := sendText(t, bob, room, "hello")
		inc := syncUntil(t, dave, resp.NextBatch, lazy, func(r *mautrix.RespSync) bool {
			return r.Rooms.Join[room] != nil && syncHasEvent(timelineOf(r, room), bobMsg)
		}).Rooms.Join[room]
		if !syncHasState(inc.State.Events, event.StateMember, bob.UserID.String()) {
			t.Fatalf("incremental lazy sync lacks the new sender's member event: %v", inc.State.Events)
		}
		if syncHasState(inc.State.Events, event.StateMember, carol.UserID.String()) {
			t.Fatal("incremental lazy sync repeats a member event the device already has")
		}
		// Without lazy loading everyone is there.
		full := syncOnce(t, dave, "", `{"room":{"timeline":{"limit":3}}}`, 0).Rooms.Join[room]
		n := 0
		for _, e := range full.State.Events {
			if e.Type == event.StateMember {
				n++
			}
		}
		if n != 4 {
			t.Fatalf("full state has %d members, want 4", n)
		}
	})
}

// TestMembershipSections: invites, joins, leaves, kicks and bans land in the
// right sections.
func TestMembershipSections(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret"})
		since := syncOnce(t, bob, "", "", 0).NextBatch

		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		resp := syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room] != nil })
		inv := resp.Rooms.Invite[room].State.Events
		if !syncHasState(inv, event.StateMember, bob.UserID.String()) || !syncHasState(inv, event.StateRoomName, "") || !syncHasState(inv, event.StateCreate, "") {
			t.Fatalf("invite_state lacks the invite, name or create event: %v", inv)
		}
		since = resp.NextBatch

		joinRoom(t, bob, room)
		resp = syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool { return r.Rooms.Join[room] != nil })
		if jr := resp.Rooms.Join[room]; !syncHasState(append(jr.State.Events, jr.Timeline.Events...), event.StateCreate, "") {
			t.Fatal("newly joined room comes without its state")
		}
		since = resp.NextBatch

		kick, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "out"})
		if err != nil {
			t.Fatal(err)
		}
		_ = kick
		resp = syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool { return r.Rooms.Leave[room] != nil })
		if lr := resp.Rooms.Leave[room]; !syncHasMembership(lr.Timeline.Events, bob.UserID, "leave", alice.UserID) {
			t.Fatalf("kick not in the leave section's timeline: %+v", lr.Timeline.Events)
		}
		if resp.Rooms.Join[room] != nil {
			t.Fatal("kicked room still in join")
		}
		since = resp.NextBatch

		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		joinRoom(t, bob, room)
		if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		resp = syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool {
			return r.Rooms.Leave[room] != nil && syncHasMembership(r.Rooms.Leave[room].Timeline.Events, bob.UserID, "ban", alice.UserID)
		})
		since = resp.NextBatch

		// A voluntary leave.
		room2 := shareRoom(t, alice, bob)
		if _, err := bob.LeaveRoom(ctx, room2); err != nil {
			t.Fatal(err)
		}
		resp = syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool { return r.Rooms.Leave[room2] != nil })
		if !syncHasMembership(resp.Rooms.Leave[room2].Timeline.Events, bob.UserID, "leave", bob.UserID) {
			t.Fatal("leave event missing")
		}
		// Left rooms stay out of an initial sync unless include_leave.
		if r := syncOnce(t, bob, "", "", 0); r.Rooms.Leave[room2] != nil || r.Rooms.Join[room2] != nil {
			t.Fatal("left room in initial sync without include_leave")
		}
		if r := syncOnce(t, bob, "", `{"room":{"include_leave":true}}`, 0); r.Rooms.Leave[room2] == nil {
			t.Fatal("left room missing with include_leave")
		}
	})
}

func syncHasState(evs []*event.Event, typ event.Type, key string) bool {
	for _, e := range evs {
		if e.Type.Type == typ.Type && e.StateKey != nil && *e.StateKey == key {
			return true
		}
	}
	return false
}

func syncHasMembership(evs []*event.Event, user id.UserID, membership string, sender id.UserID) bool {
	for _, e := range evs {
		if e.Type.Type == event.StateMember.Type && e.GetStateKey() == user.String() && e.Sender == sender {
			if m, _ := e.Content.Raw["membership"].(string); m == membership {
				return true
			}
		}
	}
	return false
}

// TestTypingStartsAndStops: typing appears in the room-mate's ephemeral
// section, and so does its end.
func TestTypingStartsAndStops(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		since := syncOnce(t, bob, "", "", 0).NextBatch
		if _, err := alice.UserTyping(ctx, room, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		resp := syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool { return slices.Equal(syncTypingIn(r, room), []id.UserID{alice.UserID}) })
		if _, err := alice.UserTyping(ctx, room, false, 0); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, resp.NextBatch, "", func(r *mautrix.RespSync) bool { l := syncTypingIn(r, room); return l != nil && len(l) == 0 })
		// Typing expires by itself.
		if _, err := alice.UserTyping(ctx, room, true, 300*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		resp = syncUntil(t, bob, resp.NextBatch, "", func(r *mautrix.RespSync) bool { return len(syncTypingIn(r, room)) == 1 })
		syncUntil(t, bob, resp.NextBatch, "", func(r *mautrix.RespSync) bool { l := syncTypingIn(r, room); return l != nil && len(l) == 0 })
		// Not for others, not for rooms one is not in.
		if _, err := bob.MakeRequest(ctx, "PUT", bob.BuildClientURL("v3", "rooms", room, "typing", alice.UserID), map[string]any{"typing": true}, nil); syncStatus(err) != 403 {
			t.Fatalf("typing for another user: %v", err)
		}
		carol := srv.Register(t, "carol")
		if _, err := carol.UserTyping(ctx, room, true, time.Second); syncStatus(err) != 403 {
			t.Fatalf("typing in a room one is not in: %v", err)
		}
	})
}

// typingIn returns the room's typing list, or nil when no m.typing came.
func syncTypingIn(r *mautrix.RespSync, room id.RoomID) []id.UserID {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return nil
	}
	for _, e := range jr.Ephemeral.Events {
		if e.Type.Type == "m.typing" {
			_ = e.Content.ParseRaw(event.EphemeralEventTyping)
			if tc, ok := e.Content.Parsed.(*event.TypingEventContent); ok {
				if tc.UserIDs == nil {
					return []id.UserID{}
				}
				return tc.UserIDs
			}
		}
	}
	return nil
}

// TestReceiptsAndUnreadCounts: unread counts follow the push rules and the
// user's receipts; private receipts are shown only to their owner.
func TestReceiptsAndUnreadCounts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		aliceSince := syncOnce(t, alice, "", "", 0).NextBatch
		bobSince := syncOnce(t, bob, "", "", 0).NextBatch
		var evs []id.EventID
		for i := 0; i < 3; i++ {
			evs = append(evs, sendText(t, alice, room, fmt.Sprint(i)))
		}
		mention, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{
			"msgtype": "m.text", "body": "bob!", "m.mentions": map[string]any{"user_ids": []string{bob.UserID.String()}},
		})
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, mention.EventID)
		resp := syncUntil(t, bob, bobSince, "", func(r *mautrix.RespSync) bool {
			return syncCountsIn(r, room) != nil && syncCountsIn(r, room).NotificationCount == 4
		})
		if c := syncCountsIn(resp, room); c.HighlightCount != 1 {
			t.Fatalf("highlight count %d, want 1", c.HighlightCount)
		}
		bobSince = resp.NextBatch

		// A private receipt on the second message: 2 left, alice sees nothing.
		if err := bob.SendReceipt(ctx, room, evs[1], event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		resp = syncUntil(t, bob, bobSince, "", func(r *mautrix.RespSync) bool {
			return syncCountsIn(r, room) != nil && syncCountsIn(r, room).NotificationCount == 2
		})
		if !syncHasReceipt(resp, room, evs[1], "m.read.private", bob.UserID) {
			t.Fatal("owner does not see their private receipt")
		}
		bobSince = resp.NextBatch
		// A public receipt on the last: 0 left, alice sees it.
		if err := bob.SendReceipt(ctx, room, evs[3], event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bobSince, "", func(r *mautrix.RespSync) bool {
			c := syncCountsIn(r, room)
			return c != nil && c.NotificationCount == 0 && c.HighlightCount == 0
		})
		aresp := syncUntil(t, alice, aliceSince, "", func(r *mautrix.RespSync) bool { return syncHasReceipt(r, room, evs[3], "m.read", bob.UserID) })
		_ = aresp
		// Alice never saw the private one: an initial sync shows only the public receipt.
		full := syncOnce(t, alice, "", "", 0)
		if syncHasReceipt(full, room, evs[1], "m.read.private", bob.UserID) {
			t.Fatal("private receipt leaked to another user")
		}
		// Bad receipts.
		if err := bob.SendReceipt(ctx, room, "$nope", event.ReceiptTypeRead, nil); syncStatus(err) != 404 {
			t.Fatalf("receipt on unknown event: %v", err)
		}
		if err := bob.SendReceipt(ctx, room, evs[0], "m.bogus", nil); syncStatus(err) != 400 {
			t.Fatalf("unknown receipt type: %v", err)
		}
		if err := bob.SendReceipt(ctx, room, evs[0], event.ReceiptTypeRead, map[string]any{"thread_id": ""}); syncStatus(err) != 400 {
			t.Fatalf("empty thread_id: %v", err)
		}
		// Read markers: m.fully_read becomes room account data.
		markSince := syncOnce(t, bob, "", "", 0).NextBatch
		if err := bob.SetReadMarkers(ctx, room, map[string]any{"m.fully_read": evs[2], "m.read": evs[3]}); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, markSince, "", func(r *mautrix.RespSync) bool {
			jr := r.Rooms.Join[room]
			if jr == nil {
				return false
			}
			for _, e := range jr.AccountData.Events {
				if e.Type.Type == "m.fully_read" && e.Content.Raw["event_id"] == evs[2].String() {
					return true
				}
			}
			return false
		})
		if err := bob.SetReadMarkers(ctx, room, map[string]any{"m.fully_read": "$unknown"}); syncStatus(err) != 404 {
			t.Fatalf("read marker on an unknown event: %v", err)
		}
		// /notifications lists what notified bob.
		var notifs struct {
			Notifications []struct {
				Event struct {
					EventID id.EventID `json:"event_id"`
				} `json:"event"`
				Read bool `json:"read"`
			} `json:"notifications"`
		}
		if _, err := bob.MakeRequest(ctx, "GET", bob.BuildClientURL("v3", "notifications"), nil, &notifs); err != nil {
			t.Fatal(err)
		}
		if len(notifs.Notifications) != 4 || notifs.Notifications[0].Event.EventID != evs[3] || !notifs.Notifications[0].Read {
			t.Fatalf("notifications = %+v", notifs.Notifications)
		}
	})
}

func syncCountsIn(r *mautrix.RespSync, room id.RoomID) *mautrix.UnreadNotificationCounts {
	if jr := r.Rooms.Join[room]; jr != nil {
		return jr.UnreadNotifications
	}
	return nil
}

func syncHasReceipt(r *mautrix.RespSync, room id.RoomID, ev id.EventID, typ string, user id.UserID) bool {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return false
	}
	for _, e := range jr.Ephemeral.Events {
		if e.Type.Type != "m.receipt" {
			continue
		}
		byType, _ := e.Content.Raw[ev.String()].(map[string]any)
		byUser, _ := byType[typ].(map[string]any)
		if _, ok := byUser[user.String()]; ok {
			return true
		}
	}
	return false
}
