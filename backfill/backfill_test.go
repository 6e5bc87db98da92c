package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

type fakeStore struct{ servers, now []string }

func (f *fakeStore) GetEvents(_ context.Context, ids []string) (map[string]*storage.Event, error) {
	out := map[string]*storage.Event{}
	for _, x := range ids {
		out[x] = &storage.Event{EventID: x, RoomID: "!r:a.test", Sender: "@u:a.test", StreamPos: 5}
	}
	return out, nil
}
func (f *fakeStore) KnownEvents(context.Context, []string) (map[string]bool, error) {
	return map[string]bool{}, nil
}
func (f *fakeStore) JoinedServersAt(context.Context, string, int64) ([]string, error) {
	return f.servers, nil
}
func (f *fakeStore) JoinedServers(context.Context, string) ([]string, error) {
	return f.now, nil
}
func (f *fakeStore) OldestEvents(context.Context, string, int) ([]string, error) {
	return nil, nil
}
func (f *fakeStore) GetRoom(context.Context, string) (*storage.RoomRow, error) {
	return &storage.RoomRow{RoomVersion: "10"}, nil
}

type fakeClient struct {
	mu      sync.Mutex
	asked   []string
	release chan struct{}
	answer  map[string]int // server → events answered (0: an error)
}

func (f *fakeClient) Backfill(ctx context.Context, server string, _ id.RoomID, _ []id.EventID, limit int) ([]json.RawMessage, error) {
	f.mu.Lock()
	f.asked = append(f.asked, server)
	f.mu.Unlock()
	if f.release != nil {
		<-f.release
	}
	n := f.answer[server]
	if n == 0 {
		return nil, errors.New("down")
	}
	out := make([]json.RawMessage, n)
	for i := range out {
		out[i] = json.RawMessage(`{}`)
	}
	return out, nil
}
func (f *fakeClient) EventAuth(context.Context, string, id.RoomID, id.EventID) ([]json.RawMessage, error) {
	return nil, nil
}

type fakeRooms struct {
	calls atomic.Int32
	got   atomic.Int32
}

func (f *fakeRooms) ImportBackfill(_ context.Context, _ id.RoomID, _ []id.EventID, events, _ []json.RawMessage) (int, error) {
	f.calls.Add(1)
	f.got.Store(int32(len(events)))
	return len(events), nil
}

// TestServersBounded: ours is never asked, at most MaxServers are, a failing
// server passes to the next, and an answer is cut to Limit events.
func TestServersBounded(t *testing.T) {
	servers := []string{"b.test", "x1.test", "x2.test", "x3.test", "x4.test", "x5.test", "x6.test"}
	c := &fakeClient{answer: map[string]int{"x6.test": 5, "x3.test": 150}}
	rooms := &fakeRooms{}
	b := New(Options{ServerName: "b.test", Client: c, Rooms: rooms, Store: &fakeStore{servers: servers}})
	added, err := b.Backfill(context.Background(), "!r:a.test", []id.EventID{"$e"})
	if err != nil || !added {
		t.Fatalf("Backfill = %v, %v", added, err)
	}
	if want := []string{"x1.test", "x2.test", "x3.test"}; !slices.Equal(c.asked, want) {
		t.Fatalf("asked %v, want %v", c.asked, want)
	}
	if rooms.got.Load() != Limit {
		t.Fatalf("imported %d events, want the first %d", rooms.got.Load(), Limit)
	}
	c.asked = nil
	c.answer = nil
	if added, _ := b.Backfill(context.Background(), "!r:a.test", []id.EventID{"$e"}); added {
		t.Fatal("added with every server down")
	}
	if len(c.asked) != MaxServers || slices.Contains(c.asked, "b.test") {
		t.Fatalf("asked %v", c.asked)
	}
}

// TestSharedAndRemembered: concurrent calls for a room share one fetch; a
// room where nothing was found is not asked again.
func TestSharedAndRemembered(t *testing.T) {
	c := &fakeClient{answer: map[string]int{}, release: make(chan struct{})}
	b := New(Options{ServerName: "b.test", Client: c, Rooms: &fakeRooms{}, Store: &fakeStore{servers: []string{"a.test"}}})
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.Backfill(context.Background(), "!r:a.test", []id.EventID{"$e"})
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(c.release)
	wg.Wait()
	if len(c.asked) != 1 {
		t.Fatalf("asked %d times, want one shared fetch", len(c.asked))
	}
	b.Backfill(context.Background(), "!r:a.test", []id.EventID{"$e"})
	if len(c.asked) != 1 {
		t.Fatalf("asked again right after finding nothing: %v", c.asked)
	}
	// A caller that gives up is answered at once.
	c2 := &fakeClient{answer: map[string]int{}, release: make(chan struct{})}
	defer close(c2.release)
	b2 := New(Options{ServerName: "b.test", Client: c2, Rooms: &fakeRooms{}, Store: &fakeStore{servers: []string{"a.test"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b2.Backfill(ctx, "!r:a.test", []id.EventID{"$e"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("gave up: %v", err)
	}
}
