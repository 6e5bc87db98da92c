package keyserver

import "testing"

// An m.device_list_update older than the cached list (its stream_id at or
// below the list's, out of the seen window, with no prev_id) is a replay of
// what the list already reflects: it must neither bring back a device nor
// move the list's stream_id back.
func TestAttackDeviceListOldUpdateIgnored(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		e := newRemoteEnv(t, backend)
		e.fed.lists[e.bob].StreamID = 50
		// The first update resyncs: the list is at stream 50 with B1.
		if err := e.update(t, "remote.example", 51, []int64{50}, "B2", false); err != nil {
			t.Fatal(err)
		}
		if l := e.list(t); l == nil || l.StreamID != 50 {
			t.Fatalf("no resynced list: %+v", l)
		}
		if err := e.update(t, "remote.example", 51, []int64{50}, "B2", false); err != nil {
			t.Fatal(err)
		}
		// An old update (stream 3, no prev_id) for a device gone since.
		if err := e.update(t, "remote.example", 3, nil, "OLD", false); err != nil {
			t.Fatal(err)
		}
		l := e.list(t)
		if _, ok := l.Devices["OLD"]; ok {
			t.Error("an update older than the cached list brought back a device")
		}
		if l.StreamID != 51 {
			t.Errorf("the list's stream_id went from 51 to %d", l.StreamID)
		}
	})
}
