package storage_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestPushBatchReads: the reads push delivery makes for all the recipients
// of an event at once answer for every user asked, past one statement's 500
// (JoinedRoomsOfUsers, MemberDisplayNames), and as their one-user
// counterparts do (joined and not forgotten; current display names; the
// positions of receipts naming known events; whole membership histories).
func TestPushBatchReads(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		r := &userDirRooms{t: t, db: db}
		var users []string
		for i := range 600 {
			u := fmt.Sprintf("@u%03d:x", i)
			users = append(users, u)
			r.member("!a:x", u, "join", "")
		}
		r.member("!a:x", "@u599:x", "join", "Last") // a later name replaces the first
		r.member("!b:x", "@u000:x", "join", "")
		r.member("!b:x", "@u001:x", "join", "")
		r.member("!b:x", "@u001:x", "leave", "")
		r.member("!c:x", "@u002:x", "join", "")
		if _, err := db.Exec(ctx, `UPDATE memberships SET forgotten = TRUE WHERE room_id = '!c:x'`); err != nil {
			t.Fatal(err)
		}
		msg := r.event("!a:x", "m.room.message", "", map[string]any{"body": "hi"})

		rooms, err := db.JoinedRoomsOfUsers(ctx, users)
		must(t, err)
		if len(rooms) != 600 || fmt.Sprint(rooms["@u000:x"]) != "[!a:x !b:x]" || fmt.Sprint(rooms["@u001:x"]) != "[!a:x]" ||
			fmt.Sprint(rooms["@u002:x"]) != "[!a:x]" || fmt.Sprint(rooms["@u599:x"]) != "[!a:x]" {
			t.Fatalf("joined rooms: %d users, u000 %v, u001 %v, u002 %v, u599 %v", len(rooms), rooms["@u000:x"],
				rooms["@u001:x"], rooms["@u002:x"], rooms["@u599:x"])
		}

		names, err := db.MemberDisplayNames(ctx, "!a:x", append(users, "@stranger:x"))
		must(t, err)
		if _, ok := names["@stranger:x"]; len(names) != 600 || names["@u599:x"] != "Last" || names["@u000:x"] != "" || ok {
			t.Fatalf("display names: %d, u599 %q", len(names), names["@u599:x"])
		}

		must(t, db.UpsertReceipt(ctx, storage.Receipt{RoomID: "!a:x", UserID: "@u000:x", Type: "m.read", EventID: msg, Pos: 1}))
		must(t, db.UpsertReceipt(ctx, storage.Receipt{RoomID: "!a:x", UserID: "@u000:x", Type: "m.read", ThreadID: "$root",
			EventID: "$unknown", Pos: 2}))
		must(t, db.UpsertReceipt(ctx, storage.Receipt{RoomID: "!a:x", UserID: "@u003:x", Type: "m.read", EventID: msg, Pos: 3}))
		msgPos, err := db.EventPosition(ctx, "!a:x", msg)
		must(t, err)
		rps, err := db.ReceiptPositions(ctx, "!a:x", []string{"@u000:x", "@u001:x"})
		must(t, err)
		if len(rps) != 1 || rps[0] != (storage.ReceiptPosition{UserID: "@u000:x", Type: "m.read", EventPos: msgPos}) {
			t.Fatalf("receipt positions = %+v", rps)
		}

		hists, err := db.MembershipHistories(ctx, "!b:x", []string{"@u000:x", "@u001:x", "@u002:x"})
		must(t, err)
		for _, u := range []string{"@u000:x", "@u001:x"} {
			want, err := db.UserMembershipHistory(ctx, "!b:x", u)
			must(t, err)
			if fmt.Sprint(hists[u]) != fmt.Sprint(want) {
				t.Fatalf("history of %s = %v, want %v", u, hists[u], want)
			}
		}
		if len(hists["@u001:x"]) != 2 || hists["@u002:x"] != nil {
			t.Fatalf("histories = %v", hists)
		}
	})
}
