package remotejoin

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
)

type fakeInviteRooms struct {
	prepared, completed int
	returned            []byte
}

func (f *fakeInviteRooms) PrepareInvite(_ context.Context, a roomserver.MembershipAction) (*roomserver.RemoteInvite, error) {
	f.prepared++
	return &roomserver.RemoteInvite{RoomID: a.RoomID, RoomVersion: "10", EventID: "$ev", Invitee: a.Target,
		Event: []byte(`{"type":"m.room.member"}`)}, nil
}

func (f *fakeInviteRooms) CompleteInvite(_ context.Context, _ *roomserver.RemoteInvite, returned []byte) (id.EventID, error) {
	f.completed++
	f.returned = returned
	return "$ev", nil
}

// fakeInviteClient answers v2 with err2 (nil: an event) and v1 with an event.
type fakeInviteClient struct {
	err2     error
	v1, v2   int
	v1Answer []byte
}

func (c *fakeInviteClient) SendInvite(context.Context, *mfed.ReqSendInvite) (*mfed.RespSendInvite, error) {
	c.v2++
	if c.err2 != nil {
		return nil, c.err2
	}
	return &mfed.RespSendInvite{Event: []byte(`{"v":2}`)}, nil
}

func (c *fakeInviteClient) MakeFullRequest(context.Context, mfed.RequestParams) ([]byte, *http.Response, error) {
	c.v1++
	return c.v1Answer, &http.Response{StatusCode: 200}, nil
}

func httpErr(status int, code, msg string) error {
	return mautrix.HTTPError{Response: &http.Response{StatusCode: status}, RespError: &mautrix.RespError{ErrCode: code, Err: msg}}
}

type denyAll struct{}

func (denyAll) AllowServer(context.Context, string) bool { return false }

// The inviter falls back to v1 only on 404 or 400 M_UNRECOGNIZED; a refusal
// is 403 with the remote's reason, a failure 502; nothing is completed then;
// the policy refuses before anything is built or sent.
func TestInviterVersionsAndErrors(t *testing.T) {
	act := roomserver.MembershipAction{Sender: "@a:hs", RoomID: "!r:hs", Target: "@b:remote", Action: "invite"}
	for _, c := range []struct {
		name      string
		err2      error
		v1        []byte
		wantV1    bool
		wantEvent string
		status    int
		code      string
	}{
		{name: "v2", wantEvent: `{"v":2}`},
		{name: "404", err2: httpErr(404, "M_UNRECOGNIZED", ""), v1: []byte(`[200,{"event":{"v":1}}]`), wantV1: true, wantEvent: `{"v":1}`},
		{name: "400 unrecognized", err2: httpErr(400, "M_UNRECOGNIZED", ""), v1: []byte(`[200,{"event":{"v":1}}]`), wantV1: true, wantEvent: `{"v":1}`},
		{name: "v1 answers no event", err2: httpErr(404, "", ""), v1: []byte(`[200,{}]`), wantV1: true, status: 502, code: "M_UNKNOWN"},
		{name: "400 other", err2: httpErr(400, "M_INVALID_PARAM", "bad"), status: 403, code: "M_FORBIDDEN"},
		{name: "403", err2: httpErr(403, "M_FORBIDDEN", "no thanks"), status: 403, code: "M_FORBIDDEN"},
		{name: "500", err2: httpErr(500, "M_UNKNOWN", "oops"), status: 502, code: "M_UNKNOWN"},
		{name: "unreachable", err2: errors.New("dial tcp: connection refused"), status: 502, code: "M_UNKNOWN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rooms, client := &fakeInviteRooms{}, &fakeInviteClient{err2: c.err2, v1Answer: c.v1}
			err := NewInviter(Options{Invites: rooms, InviteClient: client}).Invite(context.Background(), act)
			if (client.v1 > 0) != c.wantV1 {
				t.Fatalf("v1 asked %d times", client.v1)
			}
			if c.status == 0 {
				if err != nil || rooms.completed != 1 || string(rooms.returned) != c.wantEvent {
					t.Fatalf("err %v, completed %d with %s", err, rooms.completed, rooms.returned)
				}
				return
			}
			if rooms.completed != 0 {
				t.Fatal("a failed invite was completed")
			}
			status, code := 0, ""
			var mErr *mxhttp.Error
			var rErr *roomserver.Error
			switch {
			case errors.As(err, &mErr):
				status, code = mErr.Status, mErr.Code
			case errors.As(err, &rErr) && errors.Is(err, roomserver.ErrForbidden):
				status, code = 403, "M_FORBIDDEN"
			}
			if status != c.status || code != c.code {
				t.Fatalf("got %v, want %d %s", err, c.status, c.code)
			}
		})
	}
	rooms, client := &fakeInviteRooms{}, &fakeInviteClient{}
	err := NewInviter(Options{Invites: rooms, InviteClient: client, Policy: denyAll{}}).Invite(context.Background(), act)
	if !errors.Is(err, roomserver.ErrForbidden) || rooms.prepared != 0 || client.v2 != 0 {
		t.Fatalf("policy: %v, prepared %d, sent %d", err, rooms.prepared, client.v2)
	}
}
