package tests

import (
	"context"
	"net/url"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationOutboundProfile: GET /profile of another server's user asks
// that server (GET /_matrix/federation/v1/query/profile); its 404 is our
// 404 M_NOT_FOUND, an unreachable server a 502, never a local lookup.
func TestFederationOutboundProfile(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "down.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			bob := b.Register(t, "bob")
			if err := bob.SetDisplayName(context.Background(), "Bob of B"); err != nil {
				t.Fatal(err)
			}
			if r := clientCall(t, bob, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(bob.UserID.String())+"/m.tz",
				map[string]any{"m.tz": "Europe/Paris"}); r.Status != 200 {
				t.Fatalf("set m.tz: %d %s", r.Status, r.Raw)
			}
			path := "/_matrix/client/v3/profile/" + url.PathEscape(bob.UserID.String())

			r := do(t, a, "GET", path+"/displayname", "", nil)
			if r.Status != 200 || r.Body["displayname"] != "Bob of B" {
				t.Fatalf("remote displayname: %d %s", r.Status, r.Raw)
			}
			r = do(t, a, "GET", path, "", nil)
			if r.Status != 200 || r.Body["displayname"] != "Bob of B" || r.Body["m.tz"] != "Europe/Paris" {
				t.Fatalf("remote profile: %d %s", r.Status, r.Raw)
			}
			r = do(t, a, "GET", path+"/avatar_url", "", nil)
			if r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
				t.Fatalf("unset remote field: %d %s", r.Status, r.Raw)
			}
			// B has no such user: its 404 is ours.
			r = do(t, a, "GET", "/_matrix/client/v3/profile/@nobody:b.test/displayname", "", nil)
			if r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
				t.Fatalf("unknown remote user: %d %s", r.Status, r.Raw)
			}
			// An unreachable server is a gateway error, not a missing profile.
			r = do(t, a, "GET", "/_matrix/client/v3/profile/@x:down.test/displayname", "", nil)
			if r.Status != 502 {
				t.Fatalf("unreachable server: %d %s", r.Status, r.Raw)
			}
		})
	}
}
