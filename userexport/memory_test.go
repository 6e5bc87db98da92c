package userexport

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
)

// synthStore serves one user with n messages made on the fly, so the
// measurement sees the exporter's memory, not the store's.
type synthStore struct{ n int }

func (synthStore) GetEvents(context.Context, []string) (map[string]*storage.Event, error) {
	return nil, nil
}
func (synthStore) ErasedUsers(context.Context, []string) (map[string]bool, error) { return nil, nil }
func (synthStore) GetRoom(_ context.Context, id string) (*storage.RoomRow, error) {
	return &storage.RoomRow{RoomID: id, RoomVersion: "11"}, nil
}
func (synthStore) GetUser(_ context.Context, u string) (*storage.User, error) {
	return &storage.User{UserID: u}, nil
}
func (synthStore) IsErased(context.Context, string) (bool, error) { return false, nil }
func (synthStore) ListDevices(context.Context, string) ([]storage.Device, error) {
	return nil, nil
}
func (synthStore) AccountDataSince(context.Context, string, int64, int64) ([]storage.AccountData, error) {
	return nil, nil
}
func (synthStore) PushRules(context.Context, string) (string, int64, error)    { return "", 0, nil }
func (synthStore) Pushers(context.Context, string) ([]storage.Pusher, error)   { return nil, nil }
func (synthStore) FiltersOf(context.Context, string) ([]storage.Filter, error) { return nil, nil }
func (synthStore) UploadsOf(context.Context, string, string, int) ([]storage.MediaRow, error) {
	return nil, nil
}
func (synthStore) RoomsOfUser(context.Context, string, ...string) ([]storage.Membership, error) {
	return nil, nil
}

func (s synthStore) EventsBySender(_ context.Context, user string, afterPos int64, _ string, limit int) ([]*storage.Event, error) {
	var out []*storage.Event
	for p := max(afterPos+1, 1); p <= int64(s.n) && len(out) < limit; p++ {
		out = append(out, &storage.Event{EventID: fmt.Sprintf("$e%d", p), RoomID: "!r:x", StreamPos: p, Type: "m.room.message",
			Sender: user, OriginServerTS: p, JSON: []byte(fmt.Sprintf(
				`{"content":{"body":"message %d, some ordinary words to make it the size of a chat line","msgtype":"m.text"},"type":"m.room.message"}`, p))})
	}
	return out, nil
}

// TestExportBoundedMemory: 100,000 messages go through with a small,
// constant heap (the archive itself goes to io.Discard).
func TestExportBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("exports 100,000 messages")
	}
	const n = 100_000
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	start := time.Now()
	counts, err := Export(context.Background(), synthStore{n}, nil, "@u:x", io.Discard)
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	if counts.Messages != n {
		t.Fatalf("exported %d messages, want %d", counts.Messages, n)
	}
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("%d messages in %v, peak heap growth %.1f MiB", n, time.Since(start).Round(time.Millisecond), float64(growth)/(1<<20))
	if growth > 16<<20 { // holding the rendered messages alone would take over 20 MiB
		t.Errorf("peak heap grew by %d MiB exporting %d messages: not bounded", growth>>20, n)
	}
}
