package storage_test

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestRemoteDeviceLists: a list replaced whole, updates applied (device
// replaced, deleted, stream advanced, the latest stream_ids remembered and
// the oldest forgotten), marked stale, dropped; outbound stream_ids reserved
// consecutively per user.
func TestRemoteDeviceLists(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		const u = "@bob:remote.example"
		get := func() *storage.RemoteDeviceList {
			t.Helper()
			ls, err := db.RemoteDeviceLists(ctx, []string{u, "@nobody:remote.example"})
			must(t, err)
			if len(ls) > 1 {
				t.Fatalf("lists for users never stored: %v", ls)
			}
			return ls[u]
		}
		must(t, db.ReplaceRemoteDeviceList(ctx, storage.RemoteDeviceList{UserID: u, StreamID: 3,
			Devices:      map[string]storage.RemoteDevice{"A": {KeyJSON: []byte(`{"a":1}`), DisplayName: "phone"}, "B": {}},
			CrossSigning: map[string][]byte{"master": []byte(`{"m":1}`)}}, 1000))
		l := get()
		if l == nil || l.StreamID != 3 || l.Stale || string(l.Devices["A"].KeyJSON) != `{"a":1}` || l.Devices["A"].DisplayName != "phone" ||
			l.Devices["B"].KeyJSON != nil || string(l.CrossSigning["master"]) != `{"m":1}` || !l.Seen[3] {
			t.Fatalf("replaced list: %+v", l)
		}
		for sid := int64(4); sid < 70; sid++ {
			must(t, db.ApplyRemoteDeviceUpdate(ctx, storage.RemoteDeviceUpdate{UserID: u, DeviceID: "C", StreamID: sid,
				Device: storage.RemoteDevice{KeyJSON: []byte(`{"c":1}`)}}, 1000))
		}
		must(t, db.ApplyRemoteDeviceUpdate(ctx, storage.RemoteDeviceUpdate{UserID: u, DeviceID: "A", StreamID: 70, Deleted: true}, 1000))
		l = get()
		if _, ok := l.Devices["A"]; ok || l.Devices["C"].KeyJSON == nil || l.StreamID != 70 || !l.Seen[70] || l.Seen[3] || len(l.Seen) != 50 {
			t.Fatalf("after updates: stream %d, %d seen, devices %v", l.StreamID, len(l.Seen), l.Devices)
		}
		must(t, db.MarkRemoteDeviceListStale(ctx, u, 2000))
		if l = get(); !l.Stale || l.StreamID != 70 {
			t.Fatalf("stale: %+v", l)
		}
		must(t, db.DropRemoteDeviceList(ctx, u))
		if get() != nil {
			t.Fatal("dropped list still there")
		}

		for _, c := range []struct {
			n    int
			want int64
		}{{1, 0}, {3, 1}, {1, 4}} {
			prev, err := db.NextDeviceListStreamIDs(ctx, "@alice:local.example", c.n)
			must(t, err)
			if prev != c.want {
				t.Fatalf("reserving %d: prev %d, want %d", c.n, prev, c.want)
			}
		}
		if sid, err := db.DeviceListStreamID(ctx, "@alice:local.example"); err != nil || sid != 5 {
			t.Fatalf("stream id %d, %v", sid, err)
		}
	})
}

// TestSharingSinceMany: the batch answer equals SharingSince user by user:
// the later of the remote user's membership and our first member's in each
// shared room, the earliest over rooms; users sharing nothing are absent, a
// left room and an underscore in the server name (a LIKE wildcard) do not count.
func TestSharingSinceMany(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		for i, m := range [][3]string{
			{"!a:x", "@me:our_x", "join"}, {"!a:x", "@bob:b.example", "join"}, // bob after us in !a: 2
			{"!b:x", "@carol:c.example", "invite"}, {"!b:x", "@me:our_x", "join"}, // us after carol in !b: 4
			{"!c:x", "@dave:d.example", "leave"}, {"!c:x", "@me:our_x", "join"}, // dave left
			{"!d:x", "@erin:e.example", "join"}, {"!d:x", "@me:ourXx", "join"}, // not our server (_ is literal)
			{"!e:x", "@bob:b.example", "join"}, {"!e:x", "@you:our_x", "join"}, // bob in a second room: 9, later
		} {
			if _, err := db.Exec(ctx, `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos) VALUES ($1, $2, $3, $4, $5)`,
				m[0], m[1], m[2], "$e"+m[1]+m[0], i+1); err != nil {
				t.Fatal(err)
			}
		}
		users := []string{"@bob:b.example", "@carol:c.example", "@dave:d.example", "@erin:e.example", "@nobody:n.example"}
		got, err := db.SharingSinceMany(ctx, users, "our_x")
		must(t, err)
		want := map[string]int64{"@bob:b.example": 2, "@carol:c.example": 4}
		if len(got) != len(want) || got["@bob:b.example"] != 2 || got["@carol:c.example"] != 4 {
			t.Fatalf("SharingSinceMany = %v, want %v", got, want)
		}
		for _, u := range users {
			since, sharing, err := db.SharingSince(ctx, u, "our_x")
			must(t, err)
			if pos, ok := got[u]; ok != sharing || pos != since {
				t.Errorf("%s: SharingSince %d %v, SharingSinceMany %d %v", u, since, sharing, pos, ok)
			}
		}
	})
}
