package tests

import (
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestVersionsClaimV111: /versions announces v1.10 and v1.11 (with
// authenticated media still flagged for older clients), with or without an
// access token, valid or not (MSC4026: authentication is optional there).
func TestVersionsClaimV111(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		for _, token := range []string{"", alice.AccessToken, "not-a-token"} {
			r := httpCall(t, srv.URL, "GET", "/_matrix/client/versions", token, nil)
			if r.Status != 200 {
				t.Fatalf("versions with token %q: %d %s", token, r.Status, r.Raw)
			}
			var got []string
			for _, v := range r.Body["versions"].([]any) {
				got = append(got, v.(string))
			}
			for _, v := range []string{"v1.9", "v1.10", "v1.11"} {
				if !slices.Contains(got, v) {
					t.Errorf("versions %v lack %s", got, v)
				}
			}
			if uf := obj(r.Body["unstable_features"]); uf["org.matrix.msc3916.stable"] != true {
				t.Errorf("unstable_features %v lack org.matrix.msc3916.stable", uf)
			}
		}
	})
}
