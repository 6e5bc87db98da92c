package keyserver

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

// queuedEDU is one EDU given to a recordingEDUs.
type queuedEDU struct {
	Type    string
	Content json.RawMessage
}

// recordingEDUs records queued EDUs, or fails every call while down (a
// crash between storing a change and queueing its announcement).
type recordingEDUs struct {
	mu   sync.Mutex
	down bool
	got  []queuedEDU
}

func (r *recordingEDUs) QueueEDU(_ context.Context, dests []string, eduType string, content json.RawMessage, _ bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errors.New("queue unavailable")
	}
	r.got = append(r.got, queuedEDU{eduType, content})
	return nil
}

func (r *recordingEDUs) take() []queuedEDU {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.got
	r.got = nil
	return got
}

// roomWithRemote is the store with alice sharing a room with remote.example.
type roomWithRemote struct{ *storage.DB }

func (roomWithRemote) ServersSharingRoomsWith(context.Context, string) ([]string, error) {
	return []string{"local.example", "remote.example"}, nil
}

func newAnnounceService(db *storage.DB, edus *recordingEDUs) *Service {
	return New(Options{Store: roomWithRemote{db}, Stream: db.Stream, Notifier: &recordingNotifier{}, Members: sharedRooms{},
		EDUs: edus, ServerName: "local.example"})
}

// wantUpdate checks an m.device_list_update.
func wantUpdate(t *testing.T, e queuedEDU, device string, streamID int64, prev []int64, deleted bool) {
	t.Helper()
	var u deviceListUpdate
	if e.Type != "m.device_list_update" || json.Unmarshal(e.Content, &u) != nil {
		t.Fatalf("got %s %s, want an m.device_list_update", e.Type, e.Content)
	}
	if u.DeviceID != device || u.StreamID != streamID || !slicesEqual(u.PrevID, prev) || u.Deleted != deleted ||
		deleted == (len(u.Keys) > 0) {
		t.Errorf("got %s, want device %s stream_id %d prev_id %v deleted %v", e.Content, device, streamID, prev, deleted)
	}
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAnnouncementsSurviveCrash: changes stored while the EDU queue fails
// (as if the process died after answering the client) are announced by a
// keyserver built afresh over the same store on startup, in stream_id
// order with an unbroken prev_id chain, once.
func TestAnnouncementsSurviveCrash(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db, err := storage.Open(ctx, pgtest.StoreURL(t, backend), 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		alice := "@alice:local.example"
		down := &recordingEDUs{down: true}
		s := newAnnounceService(db, down)
		for _, dev := range []string{"D1", "D2"} {
			if _, err := s.Upload(ctx, alice, dev, &UploadRequest{DeviceKeys: deviceKeys(t, alice, dev)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteDevices(ctx, alice, []string{"D1"}); err != nil {
			t.Fatal(err)
		}
		master, ssk, _ := crossSigning(t, alice)
		if err := s.UploadDeviceSigningKeys(ctx, alice, &DeviceSigningRequest{MasterKey: master, SelfSigningKey: ssk}); err != nil {
			t.Fatal(err)
		}
		if len(down.got) != 0 {
			t.Fatalf("queued %d EDUs while down", len(down.got))
		}

		// "Restart": a new keyserver over the same store.
		up := &recordingEDUs{}
		s2 := newAnnounceService(db, up)
		if err := s2.AnnouncePending(ctx); err != nil {
			t.Fatal(err)
		}
		got := up.take()
		if len(got) != 4 {
			t.Fatalf("announced %d EDUs on startup, want 4: %v", len(got), got)
		}
		// D1 was numbered 1 before the crash, D2 2; D1's deletion is 3. A
		// re-sent update carries the device's current state.
		wantUpdate(t, got[0], "D1", 1, nil, true)
		wantUpdate(t, got[1], "D2", 2, []int64{1}, false)
		wantUpdate(t, got[2], "D1", 3, []int64{2}, true)
		var sk signingKeyUpdate
		if got[3].Type != "m.signing_key_update" || json.Unmarshal(got[3].Content, &sk) != nil || sk.UserID != alice ||
			string(sk.MasterKey) != string(master) {
			t.Errorf("got %s %s, want alice's m.signing_key_update", got[3].Type, got[3].Content)
		}
		if sid, _ := db.DeviceListStreamID(ctx, alice); sid != 3 {
			t.Errorf("GET /user/devices stream_id %d, want 3", sid)
		}
		// Announced once: the outbox is empty.
		if err := s2.AnnouncePending(ctx); err != nil {
			t.Fatal(err)
		}
		if got := up.take(); len(got) != 0 {
			t.Errorf("announced %d EDUs again: %v", len(got), got)
		}

		// A change while up is announced at once, continuing the chain.
		if err := s2.DeviceRenamed(ctx, alice, "D2"); err != nil {
			t.Fatal(err)
		}
		if got := up.take(); len(got) != 1 {
			t.Fatalf("rename announced %d EDUs, want 1", len(got))
		} else {
			wantUpdate(t, got[0], "D2", 4, []int64{3}, false)
		}
	})
}

// TestDehydratedReplacementAnnounced: a dehydrated device replacing an
// older one announces the new device and the old one's deletion.
func TestDehydratedReplacementAnnounced(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db, err := storage.Open(ctx, pgtest.StoreURL(t, backend), 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		alice := "@alice:local.example"
		up := &recordingEDUs{}
		s := newAnnounceService(db, up)
		put := func(dev string) {
			t.Helper()
			if _, err := s.PutDehydratedDevice(ctx, alice, &DehydratedDeviceRequest{DeviceID: dev,
				DeviceData:    json.RawMessage(`{"algorithm":"m.dehydration.v1.olm"}`),
				UploadRequest: UploadRequest{DeviceKeys: deviceKeys(t, alice, dev)}}); err != nil {
				t.Fatal(err)
			}
		}
		put("DH1")
		put("DH2")
		got := up.take()
		if len(got) != 3 {
			t.Fatalf("announced %d EDUs, want 3: %v", len(got), got)
		}
		wantUpdate(t, got[0], "DH1", 1, nil, false)
		wantUpdate(t, got[1], "DH1", 2, []int64{1}, true)
		wantUpdate(t, got[2], "DH2", 3, []int64{2}, false)
	})
}
