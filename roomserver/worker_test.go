package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tidwall/gjson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/metrics"
	"github.com/myelin-chat/myelin/internal/recovery"
)

func messageMaker(sender id.UserID, body string) maker {
	return func(*roomState) (*proto, error) {
		return &proto{Type: "m.room.message", Sender: sender, Content: MustJSON(map[string]string{"msgtype": "m.text", "body": body})}, nil
	}
}

func panickingMaker(*roomState) (*proto, error) { panic("test panic while building an event") }

func (s *Server) pending(roomID id.RoomID) int {
	s.workersMu.Lock()
	defer s.workersMu.Unlock()
	if w := s.workers[roomID]; w != nil {
		return w.pending
	}
	return 0
}

// TestRoomWorkerSurvivesPanic: a panic while one request's event is applied
// fails that request; the requests grouped with it in the same batch and the
// room's next events still go through, on the same worker.
func TestRoomWorkerSurvivesPanic(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	owner := user("owner")
	roomID, err := s.CreateRoom(ctx, owner, &CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	counter := metrics.PanicsRecovered.WithLabelValues(recovery.RoomWorker)
	before := testutil.ToFloat64(counter)

	// Hold the worker on a first request so that the next ones queue up and
	// are taken as one batch.
	started, release := make(chan struct{}), make(chan struct{})
	blocker := func(rs *roomState) (*proto, error) {
		close(started)
		<-release
		return messageMaker(owner, "first")(rs)
	}
	type outcome struct {
		name string
		evs  []*Event
		err  error
	}
	results := make(chan outcome, 4)
	submit := func(name string, mk maker) {
		go func() {
			evs, err := s.submit(ctx, roomID, &request{makers: []maker{mk}})
			results <- outcome{name, evs, err}
		}()
	}
	submit("first", blocker)
	<-started
	submit("before", messageMaker(owner, "before"))
	for s.pending(roomID) < 2 {
		time.Sleep(time.Millisecond)
	}
	submit("panics", panickingMaker)
	for s.pending(roomID) < 3 {
		time.Sleep(time.Millisecond)
	}
	submit("after", messageMaker(owner, "after"))
	for s.pending(roomID) < 4 {
		time.Sleep(time.Millisecond)
	}
	close(release)

	got := map[string]outcome{}
	for range 4 {
		select {
		case o := <-results:
			got[o.name] = o
		case <-time.After(10 * time.Second):
			t.Fatalf("requests not answered; got %v", got)
		}
	}
	var pe *recovery.PanicError
	if !errors.As(got["panics"].err, &pe) {
		t.Fatalf("panicking request: err = %v, want a recovered panic", got["panics"].err)
	}
	for _, name := range []string{"first", "before", "after"} {
		if o := got[name]; o.err != nil || len(o.evs) != 1 {
			t.Fatalf("%s: %v %v", name, o.evs, o.err)
		}
	}
	if d := testutil.ToFloat64(counter) - before; d != 1 {
		t.Fatalf("recovered %v panics, want 1", d)
	}

	// A panic in a request that runs alone (several events, all or nothing).
	_, err = s.submit(ctx, roomID, &request{makers: []maker{messageMaker(owner, "one"), panickingMaker}})
	if !errors.As(err, &pe) {
		t.Fatalf("multi-event request: err = %v, want a recovered panic", err)
	}

	// The room goes on, and nothing of the failed requests was stored.
	evID, err := s.Send(ctx, SendRequest{Sender: owner, RoomID: roomID, Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"next"}`)})
	if err != nil {
		t.Fatalf("next event after the panics: %v", err)
	}
	se, err := s.db.GetEvent(ctx, string(evID))
	if err != nil {
		t.Fatal(err)
	}
	var prevs struct {
		Prev []id.EventID `json:"prev_events"`
	}
	if err := json.Unmarshal(se.JSON, &prevs); err != nil || len(prevs.Prev) != 1 || prevs.Prev[0] != got["after"].evs[0].ID {
		t.Fatalf("next event's prev_events = %v (%v), want the last stored event %s", prevs.Prev, err, got["after"].evs[0].ID)
	}
}

// TestPowerLevelsRemovingEqualAdmin: an admin's power levels event that drops
// another admin at the same level from `users` is refused with M_FORBIDDEN
// (auth rules: changing or removing an entry at or above one's own level),
// instead of reaching mautrix v0.32's nil dereference inside the room
// worker, and the room goes on.
func TestPowerLevelsRemovingEqualAdmin(t *testing.T) {
	for _, version := range []string{"10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			s := newTestServer(t)
			ctx := context.Background()
			owner, admin := user("owner"), user("admin")
			levels := map[string]int{string(admin): 100}
			if version != "12" {
				levels[string(owner)] = 100
			}
			roomID, err := s.CreateRoom(ctx, owner, &CreateRoomRequest{Preset: "public_chat", RoomVersion: version,
				PowerLevelContentOverride: map[string]json.RawMessage{"users": MustJSON(levels)}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Join(ctx, admin, string(roomID), ""); err != nil {
				t.Fatal(err)
			}
			// The admin removes the owner (v10, v11) or, in v12 where the
			// owner is a creator with no entry, a second admin.
			target := owner
			if version == "12" {
				target = user("admin2")
				setLevels(t, s, roomID, owner, map[string]int{string(admin): 100, string(target): 100})
			}
			without := map[string]int{string(admin): 100}
			_, err = s.Send(ctx, SendRequest{Sender: admin, RoomID: roomID, Type: "m.room.power_levels", StateKey: stateKeyPtr(""),
				Content: MustJSON(map[string]any{"users": without})})
			if got := errCode(err); got != "M_FORBIDDEN" {
				t.Fatalf("removing %s: %v, want M_FORBIDDEN", target, err)
			}
			if _, err := s.Send(ctx, SendRequest{Sender: admin, RoomID: roomID, Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"still here"}`)}); err != nil {
				t.Fatalf("message after the refused event: %v", err)
			}
		})
	}
}

// setLevels replaces the room's users map (sent by a creator in v12).
func setLevels(t *testing.T, s *Server, roomID id.RoomID, sender id.UserID, levels map[string]int) {
	t.Helper()
	ctx := context.Background()
	ev, err := readState(ctx, s, roomID, "m.room.power_levels", "")
	if err != nil {
		t.Fatal(err)
	}
	var pl map[string]any
	if err := json.Unmarshal([]byte(gjson.GetBytes(ev, "content").Raw), &pl); err != nil {
		t.Fatal(err)
	}
	pl["users"] = levels
	if _, err := s.Send(ctx, SendRequest{Sender: sender, RoomID: roomID, Type: "m.room.power_levels", StateKey: stateKeyPtr(""), Content: MustJSON(pl)}); err != nil {
		t.Fatal(err)
	}
}

// TestRemotePowerLevelsRemovingEqualAdmin: the same power levels change
// received over federation is rejected (it used to crash the room worker
// through the auth check against the event's own auth events).
func TestRemotePowerLevelsRemovingEqualAdmin(t *testing.T) {
	remoteKey := mfed.GenerateSigningKey()
	s := newTestServerWith(t, Options{Keys: fixedKeys{"remote.test": remoteKey}})
	ctx := context.Background()
	remote := &Server{key: remoteKey, serverName: "remote.test"}
	owner, ruser := user("owner"), id.UserID("@r:remote.test")
	roomID, err := s.CreateRoom(ctx, owner, &CreateRoomRequest{Preset: "public_chat",
		PowerLevelContentOverride: map[string]json.RawMessage{"users": MustJSON(map[id.UserID]int{owner: 100, ruser: 100})}})
	if err != nil {
		t.Fatal(err)
	}
	row, _ := s.db.GetRoom(ctx, string(roomID))
	joinRaw := remoteEvent(t, s, remote, roomID, &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(ruser)), Sender: ruser,
		Content: MustJSON(map[string]string{"membership": "join"})}, id.EventID(row.Extremities[0]))
	joinEv, err := s.Input(ctx, roomID, joinRaw, "remote.test")
	if err != nil {
		t.Fatal(err)
	}
	dropOwner := remoteEvent(t, s, remote, roomID, &proto{Type: "m.room.power_levels", StateKey: stateKeyPtr(""), Sender: ruser,
		Content: MustJSON(map[string]any{"users": map[id.UserID]int{ruser: 100}})}, joinEv.ID)
	if _, err := s.Input(ctx, roomID, dropOwner, "remote.test"); !errors.Is(err, ErrRejected) {
		t.Fatalf("remote event removing an equal admin: %v, want ErrRejected", err)
	}
	if _, err := s.Send(ctx, SendRequest{Sender: owner, RoomID: roomID, Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"still here"}`)}); err != nil {
		t.Fatalf("message after the rejected event: %v", err)
	}
}
