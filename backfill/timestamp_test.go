package backfill

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/id"
)

type fakeTimestamps struct{ asked []string }

func (f *fakeTimestamps) TimestampToEvent(_ context.Context, server string, _ id.RoomID, _ int64, _ bool) (id.EventID, int64, error) {
	f.asked = append(f.asked, server)
	if server == "b.test" {
		return "", 0, errors.New("down")
	}
	return "$unreachable", 1, nil
}

// TestTimestampServersBounded: ours is never asked, at most
// MaxTimestampServers are, a failing server or an event that cannot be
// backfilled passes to the next, and with none reached the lookup fails.
func TestTimestampServersBounded(t *testing.T) {
	ts := &fakeTimestamps{}
	b := New(Options{ServerName: "a.test", Client: &fakeClient{}, Rooms: &fakeRooms{}, Timestamps: ts,
		Store: &fakeStore{now: []string{"a.test", "b.test", "c.test", "d.test", "e.test", "f.test"}}})
	_, err := b.EventNearTimestamp(context.Background(), "!r:a.test", 5, true)
	if !errors.Is(err, ErrNoRemoteEvent) {
		t.Fatalf("err %v, want ErrNoRemoteEvent", err)
	}
	if want := []string{"b.test", "c.test", "d.test"}; len(ts.asked) != MaxTimestampServers || ts.asked[0] != want[0] ||
		ts.asked[1] != want[1] || ts.asked[2] != want[2] {
		t.Fatalf("asked %v, want %v", ts.asked, want)
	}
	// Without a timestamp client nothing is asked.
	if _, err := New(Options{ServerName: "a.test", Store: &fakeStore{}}).EventNearTimestamp(context.Background(), "!r:a.test", 5, true); !errors.Is(err, ErrNoRemoteEvent) {
		t.Fatalf("no client: %v", err)
	}
}
