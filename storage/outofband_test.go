package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestOutOfBandMemberships: an out-of-band member event has a stream
// position and is in the user's membership history, but the room stays
// unknown and followers never see it; a room known already refuses one; the
// room's creation here drops them, in the same transaction, so its own copy
// of the same event can be stored.
func TestOutOfBandMemberships(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		room, user := "!r:remote.test", "@alice:a.test"
		first, finish, err := db.Stream.AllocateN(2)
		must(t, err)
		sk := user
		invite := &storage.Event{EventID: "$invite", RoomID: room, StreamPos: first, Depth: 5, Type: "m.room.member", StateKey: &sk,
			Sender: "@bob:remote.test", JSON: []byte(`{"content":{"membership":"invite"}}`), Membership: "invite"}
		must(t, db.WriteOutOfBand(ctx, invite, "10"))
		must(t, db.WriteOutOfBand(ctx, invite, "10")) // again: left as it is
		finish()
		if _, err := db.GetRoom(ctx, room); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("the room is known: %v", err)
		}
		mems, err := db.UserMembershipEvents(ctx, user, db.Stream.Current())
		must(t, err)
		if len(mems) != 1 || mems[0].EventID != "$invite" || mems[0].Membership != "invite" || mems[0].StreamPos != first {
			t.Fatalf("memberships: %+v", mems)
		}
		o, err := db.LatestOutOfBand(ctx, room, user)
		must(t, err)
		if o.Event.EventID != "$invite" || o.RoomVersion != "10" || o.Event.Sender != "@bob:remote.test" {
			t.Fatalf("latest: %+v %+v", o, o.Event)
		}
		if _, err := db.LatestOutOfBand(ctx, room, "@carol:a.test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("another user's: %v", err)
		}
		if evs, err := db.StreamEvents(ctx, 0, db.Stream.Current(), 100); err != nil || len(evs) != 0 {
			t.Fatalf("followers see %d events (%v)", len(evs), err)
		}

		// The room created here (a remote join): its own copy of the invite.
		copyOfInvite := *invite
		copyOfInvite.StreamPos = first + 1
		must(t, db.WriteRoomEvents(ctx, &storage.RoomWrite{NewRoom: &storage.RoomRow{RoomID: room, RoomVersion: "10", Creator: "@bob:remote.test"},
			RoomID: room, Events: []storage.Event{copyOfInvite}}))
		if _, err := db.LatestOutOfBand(ctx, room, user); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("out-of-band rows left after the room's creation: %v", err)
		}
		if evs, err := db.StreamEvents(ctx, 0, db.Stream.Current(), 100); err != nil || len(evs) != 1 {
			t.Fatalf("followers see %d events (%v), want the room's one", len(evs), err)
		}
		// A known room takes no out-of-band event.
		leave := *invite
		leave.EventID, leave.StreamPos, leave.Membership = "$leave", first+2, "leave"
		if err := db.WriteOutOfBand(ctx, &leave, "10"); !errors.Is(err, storage.ErrRoomKnown) {
			t.Fatalf("out-of-band event of a known room: %v", err)
		}
	})
}

// TestOutOfBandInviteOfStaleRoom: a known room that our server is not joined
// to takes an out-of-band invite (WriteOutOfBandUnjoined; one joined refuses
// it); a room event stored after it but earlier in the room (the unban
// reaching the stale copy after the invite) does not hide it from the
// membership reads, a deeper one (the rejoin) does; DropOutOfBand deletes
// the rows so the room's own copy can be stored.
func TestOutOfBandInviteOfStaleRoom(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		room, user := "!stale:remote.test", "@alice:a.test"
		first, finish, err := db.Stream.AllocateN(4)
		must(t, err)
		defer finish()
		sk := user
		must(t, db.WriteRoomEvents(ctx, &storage.RoomWrite{NewRoom: &storage.RoomRow{RoomID: room, RoomVersion: "10", Creator: "@bob:remote.test"},
			RoomID: room}))
		invite := &storage.Event{EventID: "$invite", RoomID: room, StreamPos: first, Depth: 10, Type: "m.room.member", StateKey: &sk,
			Sender: "@bob:remote.test", JSON: []byte(`{"content":{"membership":"invite"}}`), Membership: "invite"}
		must(t, db.WriteOutOfBandUnjoined(ctx, invite, "10", "a.test"))
		if err := db.WriteOutOfBand(ctx, invite, "10"); !errors.Is(err, storage.ErrRoomKnown) {
			t.Fatalf("WriteOutOfBand of a known room: %v", err)
		}
		if err := db.WriteOutOfBandUnjoined(ctx, invite, "10", "remote.test"); err != nil {
			t.Fatalf("WriteOutOfBandUnjoined for a server not joined: %v", err)
		}
		latest := func(want string) {
			t.Helper()
			mems, err := db.UserMembershipEvents(ctx, user, first+10)
			must(t, err)
			if len(mems) == 0 || mems[len(mems)-1].EventID != want {
				t.Fatalf("memberships %+v, want the latest %s", mems, want)
			}
		}
		// The unban, stored after the invite, is before it in the room.
		unban := storage.Event{EventID: "$unban", RoomID: room, StreamPos: first + 1, Depth: 8, Type: "m.room.member", StateKey: &sk,
			Sender: "@bob:remote.test", JSON: []byte(`{"content":{"membership":"leave"}}`), Membership: "leave"}
		must(t, db.WriteRoomEvents(ctx, &storage.RoomWrite{RoomID: room, Events: []storage.Event{unban}}))
		latest("$invite")
		if o, err := db.LatestOutOfBand(ctx, room, user); err != nil || o.Event.EventID != "$invite" {
			t.Fatalf("LatestOutOfBand after the unban: %+v, %v", o, err)
		}
		// The rejoin: its own copy of the invite and the join, deeper.
		copyOfInvite := *invite
		copyOfInvite.StreamPos = first + 2
		join := storage.Event{EventID: "$join", RoomID: room, StreamPos: first + 3, Depth: 11, Type: "m.room.member", StateKey: &sk,
			Sender: user, JSON: []byte(`{"content":{"membership":"join"}}`), Membership: "join"}
		must(t, db.WriteRoomEvents(ctx, &storage.RoomWrite{RoomID: room, DropOutOfBand: true, Events: []storage.Event{copyOfInvite, join}}))
		latest("$join")
		if ids, err := db.OutOfBandEventIDs(ctx, room); err != nil || len(ids) != 0 {
			t.Fatalf("out-of-band rows after the rejoin: %v, %v", ids, err)
		}
		if _, err := db.LatestOutOfBand(ctx, room, user); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("LatestOutOfBand after the rejoin: %v", err)
		}
	})
}

// TestOutOfBandDepthOrder: a knock's rejection (an out-of-band leave)
// recorded after the user knocked again, but earlier in the room, leaves the
// new knock the user's latest membership, in /sync's read and LatestOutOfBand.
func TestOutOfBandDepthOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		room, user := "!knock:remote.test", "@alice:a.test"
		first, finish, err := db.Stream.AllocateN(3)
		must(t, err)
		defer finish()
		sk := user
		ev := func(id string, pos, depth int64, membership string) *storage.Event {
			return &storage.Event{EventID: id, RoomID: room, StreamPos: pos, Depth: depth, Type: "m.room.member", StateKey: &sk,
				Sender: user, JSON: []byte(`{"content":{"membership":"` + membership + `"}}`), Membership: membership}
		}
		must(t, db.WriteOutOfBand(ctx, ev("$knock1", first, 5, "knock"), "10"))
		must(t, db.WriteOutOfBand(ctx, ev("$knock2", first+1, 7, "knock"), "10"))
		must(t, db.WriteOutOfBand(ctx, ev("$kick", first+2, 6, "leave"), "10")) // the rejection of the first
		mems, err := db.UserMembershipEvents(ctx, user, first+10)
		must(t, err)
		if len(mems) == 0 || mems[len(mems)-1].EventID != "$knock2" {
			t.Fatalf("memberships %+v, want the latest $knock2", mems)
		}
		if o, err := db.LatestOutOfBand(ctx, room, user); err != nil || o.Event.EventID != "$knock2" {
			t.Fatalf("LatestOutOfBand: %+v, %v", o, err)
		}
	})
}
