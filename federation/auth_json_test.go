package federation

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// TestAuthenticateChecksBodyJSON: a federation request body goes through the
// same JSON edge as a client's (mxhttp.CheckJSON): invalid UTF-8 is M_NOT_JSON,
// an unpaired surrogate or nesting beyond the bound M_BAD_JSON — even when
// the origin signed it.
func TestAuthenticateChecksBodyJSON(t *testing.T) {
	origin := mfed.GenerateSigningKey()
	store := memKeys{}
	_ = store.StoreServerKeys(context.Background(), []storage.ServerKey{{ServerName: "a.test", KeyID: string(origin.ID),
		VerifyKey: string(origin.Pub), ValidUntilTS: time.Now().Add(time.Hour).UnixMilli()}})
	auth := &Authenticator{ServerName: "b.test", Policy: AllowAll{},
		Keys: &KeyFetcher{Own: &KeyRing{ServerName: "b.test", Key: mfed.GenerateSigningKey()}, Store: store, Policy: AllowAll{}}}
	const uri = "/_matrix/federation/v1/send/1"
	header := func(body string) string {
		sig, err := origin.SignJSON(signedRequest{Method: "PUT", URI: uri, Origin: "a.test", Destination: "b.test", Content: []byte(body)})
		if err != nil {
			sig = "c2ln" // cannot be signed: the body is refused before the signature matters
		}
		return mfed.XMatrixAuth{Origin: "a.test", Destination: "b.test", KeyID: origin.ID, Signature: sig}.String()
	}
	deep := `{"edus":` + strings.Repeat("[", mxhttp.MaxJSONDepth+1) + strings.Repeat("]", mxhttp.MaxJSONDepth+1) + `}`
	for body, want := range map[string]string{
		`{"pdus":[],"edus":[]}`:           "",
		`{"edus":[{"x":"\ud83d\ude00"}]}`: "",
		"{\"edus\":[{\"x\":\"\xff\"}]}":   "M_NOT_JSON",
		`{"edus":[{"x":"\ud800"}]}`:       "M_BAD_JSON",
		deep:                              "M_BAD_JSON",
	} {
		r := httptest.NewRequest("PUT", uri, strings.NewReader(body))
		r.Header.Set("Authorization", header(body))
		_, _, err := auth.Authenticate(r)
		var mErr *mxhttp.Error
		got := ""
		if errors.As(err, &mErr) {
			got = mErr.Code
		} else if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("body %.40q: got %q (%v), want %q", body, got, err, want)
		}
	}
}
