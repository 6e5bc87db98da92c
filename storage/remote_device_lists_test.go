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
