package tests

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/storage"
)

// uiaErr is a mautrix error with the response body it came with.
type uiaErr struct {
	err  error
	body []byte
}

// call makes a request with mautrix and keeps the error body (mautrix only
// returns it from MakeRequest), for UIA challenges.
func call(c *mautrix.Client, method, url string, body any) uiaErr {
	contents, err := c.MakeRequest(context.Background(), method, url, body, nil)
	return uiaErr{err: err, body: contents}
}

// wantErr checks a mautrix error's status and errcode ("" for none).
func wantErr(t *testing.T, err error, status int, errcode string) {
	t.Helper()
	wantUIAErr(t, uiaErr{err: err}, status, errcode)
}

// wantUIAErr checks status and errcode and returns the decoded body.
func wantUIAErr(t *testing.T, e uiaErr, status int, errcode string) map[string]any {
	t.Helper()
	if e.err == nil {
		t.Fatalf("want %d %s, got success", status, errcode)
	}
	var he mautrix.HTTPError
	if !errors.As(e.err, &he) || he.Response == nil {
		t.Fatalf("expected an HTTP error, got %v", e.err)
	}
	var body map[string]any
	_ = json.Unmarshal(e.body, &body)
	code := ""
	if he.RespError != nil {
		code = he.RespError.ErrCode
	}
	if he.Response.StatusCode != status || code != errcode {
		t.Fatalf("want %d %s, got %d %s: %s", status, errcode, he.Response.StatusCode, code, e.body)
	}
	return body
}

// loginPassword logs a new device in and returns a client for it.
func loginPassword(t *testing.T, srv *testserver.Server, user, password string, deviceID id.DeviceID) (*mautrix.Client, error) {
	t.Helper()
	c := srv.Client(t)
	resp, err := c.Login(context.Background(), &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:   password,
		DeviceID:   deviceID,
	})
	if err != nil {
		return nil, err
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c, nil
}

func passwordAuth(session string, userID id.UserID, password string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"session":    session,
		"identifier": map[string]any{"type": "m.id.user", "user": userID.String()},
		"password":   password,
	}
}

func storageToken(token string, uses, expiry *int64) storage.RegistrationToken {
	return storage.RegistrationToken{Token: token, UsesAllowed: uses, ExpiryTS: expiry}
}
