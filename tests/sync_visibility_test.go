package tests

import (
	"context"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSyncHistoryVisibility: /sync timelines (initial, incremental after a
// join, and limited) show a user exactly the events /messages shows them,
// for each m.room.history_visibility value.
func TestSyncHistoryVisibility(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		cases := []struct {
			vis string
			// which of before-invite, after-invite messages the joiner sees
			seeBeforeInvite, seeAfterInvite bool
		}{
			{"joined", false, false},
			{"invited", false, true},
			{"shared", true, true},
			{"world_readable", true, true},
		}
		for i, tc := range cases {
			bob := srv.Register(t, "bob"+tc.vis)
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
				Type: event.StateHistoryVisibility, StateKey: new(string),
				Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibility(tc.vis)}},
			}}})
			// Bob's sync chain starts before he is in the room.
			start := syncOnce(t, bob, "", "", 0)
			beforeInvite := sendText(t, alice, room, "before invite")
			must(alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}))
			afterInvite := sendText(t, alice, room, "after invite")
			joinRoom(t, bob, room)
			afterJoin := sendText(t, alice, room, "after join")

			want := func(t *testing.T, where string, got []id.EventID) {
				t.Helper()
				if slices.Contains(got, beforeInvite) != tc.seeBeforeInvite || slices.Contains(got, afterInvite) != tc.seeAfterInvite ||
					!slices.Contains(got, afterJoin) {
					t.Errorf("%s (%s): got %v; want before-invite %v, after-invite %v, after-join true",
						tc.vis, where, got, tc.seeBeforeInvite, tc.seeAfterInvite)
				}
			}
			// /messages is the reference.
			msgs := must(bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100))
			var msgIDs []id.EventID
			for _, e := range msgs.Chunk {
				msgIDs = append(msgIDs, e.ID)
			}
			want(t, "/messages", msgIDs)

			const big = `{"room":{"timeline":{"limit":100}}}`
			initial := syncOnce(t, bob, "", big, 0)
			jr := initial.Rooms.Join[room]
			if jr == nil {
				t.Fatalf("%s: room missing from initial sync", tc.vis)
			}
			want(t, "initial sync", syncTimelineIDs(jr))
			if got := syncTimelineIDs(jr); !slices.Equal(got, reversed(msgIDs)) {
				t.Errorf("%s: initial sync timeline %v differs from /messages %v", tc.vis, got, reversed(msgIDs))
			}
			incr := syncUntil(t, bob, start.NextBatch, big, func(r *mautrix.RespSync) bool {
				return r.Rooms.Join[room] != nil && syncHasEvent(timelineOf(r, room), afterJoin)
			})
			want(t, "incremental sync after join", syncTimelineIDs(incr.Rooms.Join[room]))
			// A limited timeline of 3 holds the latest events; only visible ones.
			limited := syncOnce(t, bob, "", `{"room":{"timeline":{"limit":3}}}`, 0)
			for _, e := range limited.Rooms.Join[room].Timeline.Events {
				if !slices.Contains(msgIDs, e.ID) {
					t.Errorf("%s: limited sync shows %s (%s), which /messages hides", tc.vis, e.ID, e.Type.Type)
				}
			}
			_ = i
		}
	})
}

func reversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// TestSyncSummaryAtSyncPosition: the summary's counts and heroes describe the
// room at the end of the synced range, not a membership that committed after
// it (here: a join held above the stream's safe position by an unfinished
// writer, so the sync cannot see its event yet).
func TestSyncSummaryAtSyncPosition(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		room := shareRoom(t, alice, bob)
		_, finish, err := srv.DB.Stream.Allocate() // a writer in flight: the safe position stops here
		if err != nil {
			t.Fatal(err)
		}
		finished := false
		defer func() {
			if !finished {
				finish()
			}
		}()
		joinRoom(t, carol, room) // committed, above the safe position
		counts := func(r *mautrix.RespSync) (int, []id.UserID, bool) {
			jr := r.Rooms.Join[room]
			if jr == nil || jr.Summary.JoinedMemberCount == nil {
				t.Fatalf("no summary for the room")
			}
			return *jr.Summary.JoinedMemberCount, jr.Summary.Heroes, syncHasMembership(jr.Timeline.Events, carol.UserID, "join", carol.UserID)
		}
		first := syncOnce(t, alice, "", "", 0)
		if n, heroes, sawJoin := counts(first); n != 2 || slices.Contains(heroes, carol.UserID) || sawJoin {
			t.Errorf("summary before carol's join is readable: joined %d, heroes %v, join in timeline %v; want 2, without carol", n, heroes, sawJoin)
		}
		finish()
		finished = true
		next := syncUntil(t, alice, first.NextBatch, "", func(r *mautrix.RespSync) bool {
			return r.Rooms.Join[room] != nil && syncHasMembership(timelineOf(r, room), carol.UserID, "join", carol.UserID)
		})
		if n, heroes, _ := counts(next); n != 3 || !slices.Contains(heroes, carol.UserID) {
			t.Errorf("summary with carol's join: joined %d, heroes %v; want 3 with carol", n, heroes)
		}
	})
}
