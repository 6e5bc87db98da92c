package storage_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestUnreadBatchReads: the reads of one user's unread counts in many rooms
// answer for every room asked, past one statement's 500 rooms, as their
// one-room counterparts do: RoomsEventsRange keeps each room's last limit
// events of its own range, UserReceiptPositions the receipts naming known
// events, UserMembershipHistories whole histories.
func TestUnreadBatchReads(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		r := &userDirRooms{t: t, db: db}
		const n = 510
		var rooms []string
		last := map[string]string{}
		for i := range n {
			room := fmt.Sprintf("!r%03d:x", i)
			rooms = append(rooms, room)
			r.member(room, "@me:x", "join", "")
			for range i % 4 {
				last[room] = r.event(room, "m.room.message", "", map[string]any{"body": "hi"})
			}
		}
		r.member("!r001:x", "@me:x", "leave", "")
		r.member("!r001:x", "@me:x", "join", "")
		// A later event in an early room: ranges interleave across rooms.
		r.event("!r003:x", "m.room.message", "", map[string]any{"body": "late"})
		to := r.pos

		from := map[string]int64{}
		for i, room := range rooms {
			from[room] = int64(i % 7) // some before, some inside the rooms' events
		}
		for _, limit := range []int{2, 500} {
			got, err := db.RoomsEventsRange(ctx, from, to, limit)
			must(t, err)
			for _, room := range rooms {
				want, _, err := db.RoomEventsRange(ctx, room, from[room], to, limit)
				must(t, err)
				if ids(got[room]) != ids(want) {
					t.Fatalf("limit %d, %s: %s, want %s", limit, room, ids(got[room]), ids(want))
				}
			}
		}

		var withReceipt []string
		for i, room := range rooms {
			if ev, ok := last[room]; ok && i%2 == 0 {
				must(t, db.UpsertReceipt(ctx, storage.Receipt{RoomID: room, UserID: "@me:x", Type: "m.read", EventID: ev, Pos: int64(i + 1)}))
				withReceipt = append(withReceipt, room)
			}
		}
		must(t, db.UpsertReceipt(ctx, storage.Receipt{RoomID: "!r002:x", UserID: "@me:x", Type: "m.read", ThreadID: "$t",
			EventID: "$unknown", Pos: 9999}))
		rps, err := db.UserReceiptPositions(ctx, "@me:x", rooms)
		must(t, err)
		if len(rps) != len(withReceipt) {
			t.Fatalf("%d receipt positions, want %d", len(rps), len(withReceipt))
		}
		for _, rp := range rps {
			pos, err := db.EventPosition(ctx, rp.RoomID, last[rp.RoomID])
			must(t, err)
			if rp.EventPos != pos || rp.UserID != "@me:x" || rp.Type != "m.read" {
				t.Fatalf("receipt position %+v, want position %d", rp, pos)
			}
		}

		hists, err := db.UserMembershipHistories(ctx, "@me:x", rooms)
		must(t, err)
		for _, room := range []string{"!r000:x", "!r001:x", rooms[n-1]} {
			want, err := db.UserMembershipHistory(ctx, room, "@me:x")
			must(t, err)
			if fmt.Sprint(hists[room]) != fmt.Sprint(want) {
				t.Fatalf("history in %s = %v, want %v", room, hists[room], want)
			}
		}
		if len(hists) != n || len(hists["!r001:x"]) != 3 {
			t.Fatalf("%d histories, !r001:x %v", len(hists), hists["!r001:x"])
		}
	})
}

func ids(evs []*storage.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.EventID)
	}
	return fmt.Sprint(s)
}
