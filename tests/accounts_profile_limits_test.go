package tests

import (
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestProfileFieldLimits: displayname and avatar_url are bounded (a 5 MB
// avatar_url was accepted and then served to anyone), in characters, so
// names in any script get the same room; the whole profile stays under the
// spec's 64 KiB whichever field grows it; avatar_url need not be mxc://
// (Complement's TestAvatarUrlUpdate sets an https URL).
func TestProfileFieldLimits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		tok := alice.AccessToken
		me := "/_matrix/client/v3/profile/" + alice.UserID.String()
		put := func(field string, value any) rawResp {
			return doJSON(t, srv, "PUT", me+"/"+field, tok, map[string]any{field: value})
		}
		refused := func(what string, r rawResp, code string) {
			t.Helper()
			if r.Status != 400 || r.errcode() != code {
				t.Fatalf("%s = %d %.200s, want 400 %s", what, r.Status, r.Raw, code)
			}
		}

		if r := put("avatar_url", "http://somewhere/my-pic.jpg"); r.Status != 200 {
			t.Fatalf("non-mxc avatar_url = %d %s", r.Status, r.Raw)
		}
		refused("5 MB avatar_url", put("avatar_url", "mxc://localhost/"+strings.Repeat("a", 5<<20)), "M_INVALID_PARAM")
		refused("avatar_url one character too long", put("avatar_url", "mxc://localhost/"+strings.Repeat("a", accounts.MaxAvatarURL-15)), "M_INVALID_PARAM")
		if r := put("avatar_url", "mxc://localhost/"+strings.Repeat("a", accounts.MaxAvatarURL-16)); r.Status != 200 {
			t.Fatalf("avatar_url at the bound = %d %s", r.Status, r.Raw)
		}

		refused("displayname too long", put("displayname", strings.Repeat("a", accounts.MaxDisplayName+1)), "M_INVALID_PARAM")
		wide := strings.Repeat("名", accounts.MaxDisplayName) // 768 bytes, 256 characters
		if r := put("displayname", wide); r.Status != 200 {
			t.Fatalf("displayname of %d wide characters = %d %s", accounts.MaxDisplayName, r.Status, r.Raw)
		}

		// Nothing refused was stored; anonymous readers see what was accepted.
		r := do(t, srv, "GET", me, "", nil)
		if r.Status != 200 || r.Body["displayname"] != wide || len(r.Body["avatar_url"].(string)) != accounts.MaxAvatarURL {
			t.Fatalf("profile = %d %.300s", r.Status, r.Raw)
		}

		// The 64 KiB total counts displayname and avatar_url too.
		if r := put("avatar_url", nil); r.Status != 200 {
			t.Fatalf("clearing avatar_url = %d %s", r.Status, r.Raw)
		}
		if r := put("org.example.big", strings.Repeat("x", 64*1024-1200)); r.Status != 200 {
			t.Fatalf("large custom field = %d %.200s", r.Status, r.Raw)
		}
		refused("avatar_url past the profile total", put("avatar_url", "mxc://localhost/"+strings.Repeat("b", 900)), "M_PROFILE_TOO_LARGE")
		refused("custom field past the profile total", put("org.example.more", strings.Repeat("y", 2048)), "M_PROFILE_TOO_LARGE")
	})
}
