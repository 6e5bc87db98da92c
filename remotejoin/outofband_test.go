package remotejoin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// fakeOOB is the writer's side, recording what was asked of it.
type fakeOOB struct {
	membership *roomserver.OutOfBandMembership
	recorded   []string // memberships recorded, "local" for a local rejection
	knockState []json.RawMessage
}

func (f *fakeOOB) OutOfBand(context.Context, id.UserID, id.RoomID) (*roomserver.OutOfBandMembership, error) {
	if f.membership == nil {
		return nil, roomserver.NotFound("none")
	}
	return f.membership, nil
}
func (f *fakeOOB) SignLeave(_ id.RoomID, _ id.RoomVersion, _ []byte, _ id.UserID, _ string) ([]byte, id.EventID, error) {
	return []byte(`{"leave":true}`), "$leave", nil
}
func (f *fakeOOB) SignKnock(_ id.RoomID, _ id.RoomVersion, _ []byte, _ id.UserID, _ string) ([]byte, id.EventID, error) {
	return []byte(`{"knock":true}`), "$knock", nil
}
func (f *fakeOOB) RecordOutOfBand(_ context.Context, _ id.RoomID, _ id.RoomVersion, raw []byte, state []json.RawMessage) error {
	f.recorded = append(f.recorded, string(raw))
	f.knockState = state
	return nil
}
func (f *fakeOOB) RejectLocally(context.Context, id.UserID, id.RoomID) error {
	f.recorded = append(f.recorded, "local")
	return nil
}

// fakeMembers answers the handshakes; servers in down fail.
type fakeMembers struct {
	down  map[string]bool
	asked []string
	knock string // send_knock's answer
}

func (f *fakeMembers) MakeLeave(_ context.Context, req *mfed.ReqMakeLeave) (*mfed.RespMakeLeave, error) {
	f.asked = append(f.asked, "make_leave "+req.Via)
	if f.down[req.Via] {
		return nil, errors.New("down")
	}
	return &mfed.RespMakeLeave{RoomVersion: "10", Event: []byte(`{}`)}, nil
}
func (f *fakeMembers) SendLeave(_ context.Context, req *mfed.ReqSendLeave) error {
	f.asked = append(f.asked, "send_leave "+req.Via)
	return nil
}
func (f *fakeMembers) MakeKnock(_ context.Context, req *mfed.ReqMakeKnock) (*mfed.RespMakeKnock, error) {
	f.asked = append(f.asked, "make_knock "+req.Via)
	if f.down[req.Via] {
		return nil, errors.New("down")
	}
	return &mfed.RespMakeKnock{RoomVersion: "10", Event: []byte(`{}`)}, nil
}
func (f *fakeMembers) MakeFullRequest(_ context.Context, p mfed.RequestParams) ([]byte, *http.Response, error) {
	f.asked = append(f.asked, "send_knock "+p.ServerName)
	return nil, nil, json.Unmarshal([]byte(f.knock), p.ResponseJSON)
}

func TestOutOfBandFlows(t *testing.T) {
	ctx := context.Background()
	room := id.RoomID("!r:room.test")
	alice := id.UserID("@alice:a.test")
	invite := &roomserver.OutOfBandMembership{Membership: "invite", Sender: "@bob:inviter.test", RoomVersion: "10", Servers: []string{"state.test"}}

	// Accepting: the inviter's server first.
	oob := &fakeOOB{membership: invite}
	j := New(Options{ServerName: "a.test", OutOfBand: oob, Memberships: &fakeMembers{}})
	if got := j.Candidates(room, j.inviterFirst(ctx, alice, room, []string{"via.test"})); !slices.Equal(got, []string{"inviter.test", "via.test", "state.test", "room.test"}) {
		t.Fatalf("candidates: %v", got)
	}

	// Rejecting: the inviter's server, else the stripped state's, else the room's.
	members := &fakeMembers{down: map[string]bool{"inviter.test": true, "state.test": true}}
	j = New(Options{ServerName: "a.test", OutOfBand: oob, Memberships: members})
	if err := j.Leave(ctx, alice, room, ""); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(members.asked, []string{"make_leave inviter.test", "make_leave state.test", "make_leave room.test", "send_leave room.test"}) ||
		!slices.Equal(oob.recorded, []string{`{"leave":true}`}) {
		t.Fatalf("asked %v, recorded %v", members.asked, oob.recorded)
	}
	// Nobody reachable: rejected locally.
	oob.recorded = nil
	j = New(Options{ServerName: "a.test", OutOfBand: oob, Memberships: &fakeMembers{down: map[string]bool{"inviter.test": true, "state.test": true, "room.test": true}}})
	if err := j.Leave(ctx, alice, room, ""); err != nil || !slices.Equal(oob.recorded, []string{"local"}) {
		t.Fatalf("local rejection: %v %v", err, oob.recorded)
	}
	// No out-of-band membership: not found, nobody asked.
	members = &fakeMembers{}
	j = New(Options{ServerName: "a.test", OutOfBand: &fakeOOB{}, Memberships: members})
	if err := j.Leave(ctx, alice, room, ""); !errors.Is(err, roomserver.ErrNotFound) || len(members.asked) != 0 {
		t.Fatalf("nothing to reject: %v %v", err, members.asked)
	}

	// Knocking: the answer's stripped state under either name.
	for _, answer := range []string{`{"knock_room_state":[{"type":"m.room.name"}]}`, `{"knock_state_events":[{"type":"m.room.name"}]}`} {
		oob = &fakeOOB{}
		j = New(Options{ServerName: "a.test", OutOfBand: oob, Memberships: &fakeMembers{knock: answer}})
		if err := j.Knock(ctx, alice, room, nil, "hi"); err != nil {
			t.Fatal(err)
		}
		if len(oob.knockState) != 1 || !slices.Equal(oob.recorded, []string{`{"knock":true}`}) {
			t.Fatalf("%s: recorded %v with %v", answer, oob.recorded, oob.knockState)
		}
	}
	// Every candidate down: not found.
	j = New(Options{ServerName: "a.test", OutOfBand: &fakeOOB{}, Memberships: &fakeMembers{down: map[string]bool{"room.test": true}}})
	if err := j.Knock(ctx, alice, room, nil, ""); !errors.Is(err, roomserver.ErrNotFound) {
		t.Fatalf("knock with every server down: %v", err)
	}
}

// TestJoinCandidates: servers the client names are the only ones a join
// tries (after an inviter's); the servers known from an earlier membership
// and the room ID's domain only when it names none.
func TestJoinCandidates(t *testing.T) {
	ctx := context.Background()
	room := id.RoomID("!r:room.test")
	alice := id.UserID("@alice:a.test")
	j := New(Options{ServerName: "a.test", OutOfBand: &fakeOOB{}, Memberships: &fakeMembers{}})
	if got := j.joinCandidates(ctx, alice, room, []string{"via.test"}, []string{"known.test"}); !slices.Equal(got, []string{"via.test"}) {
		t.Errorf("with via: %v", got)
	}
	if got := j.joinCandidates(ctx, alice, room, nil, []string{"known.test"}); !slices.Equal(got, []string{"known.test", "room.test"}) {
		t.Errorf("without via: %v", got)
	}
	invite := &roomserver.OutOfBandMembership{Membership: "invite", Sender: "@bob:inviter.test", RoomVersion: "10", Servers: []string{"state.test"}}
	j = New(Options{ServerName: "a.test", OutOfBand: &fakeOOB{membership: invite}, Memberships: &fakeMembers{}})
	if got := j.joinCandidates(ctx, alice, room, []string{"via.test"}, nil); !slices.Equal(got, []string{"inviter.test", "via.test", "state.test"}) {
		t.Errorf("invited, with via: %v", got)
	}
}
