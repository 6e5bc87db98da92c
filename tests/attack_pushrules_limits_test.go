package tests

import (
	"fmt"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestPushRulesAreBounded: every event in a user's rooms is matched against
// all their push rules, and the whole set is rewritten on each change. A rule
// of 20,000 conditions, a 1 MB pattern, a 60 kB rule ID or a 100 kB action are
// refused (M_TOO_LARGE / M_INVALID_PARAM) and change nothing; ordinary rules
// still work; the total a user stores is bounded too.
func TestPushRulesAreBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		const base = "/_matrix/client/v3/pushrules/global/"
		want := func(what string, r rawResp, errcode string) {
			t.Helper()
			if r.Status != 400 && r.Status != 413 || r.errcode() != errcode {
				t.Errorf("%s: %d %.200s, want %s", what, r.Status, r.Raw, errcode)
			}
		}
		conds := make([]map[string]string, 20_000)
		for i := range conds {
			conds[i] = map[string]string{"kind": "event_match", "key": "content.body", "pattern": "*a*b*"}
		}
		want("20,000 conditions", clientCall(t, alice, "PUT", base+"override/many", map[string]any{"actions": []string{"notify"}, "conditions": conds}), "M_TOO_LARGE")
		want("1 MB pattern", clientCall(t, alice, "PUT", base+"content/big", map[string]any{"actions": []string{"notify"}, "pattern": strings.Repeat("*a", 500_000)}), "M_TOO_LARGE")
		want("60 kB rule ID", clientCall(t, alice, "PUT", base+"override/"+strings.Repeat("r", 60_000), map[string]any{"actions": []string{"notify"}, "conditions": []any{}}), "M_INVALID_PARAM")

		if r := clientCall(t, alice, "PUT", base+"content/keyword", map[string]any{"actions": []string{"notify"}, "pattern": "lunch"}); r.Status != 200 {
			t.Fatalf("ordinary content rule: %d %s", r.Status, r.Raw)
		}
		want("100 kB action", clientCall(t, alice, "PUT", base+"content/keyword/actions",
			map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "x", "value": strings.Repeat("v", 100_000)}}}), "M_TOO_LARGE")
		r := clientCall(t, alice, "GET", base+"content/keyword", nil)
		if r.Status != 200 || strings.Contains(r.Raw, "vvvv") {
			t.Errorf("the keyword rule after refused changes: %d %.200s", r.Status, r.Raw)
		}
		if r := clientCall(t, alice, "GET", base+"override/many", nil); r.Status != 404 {
			t.Errorf("a refused rule was stored: %d %.200s", r.Status, r.Raw)
		}

		// The total: rules of ~7 kB each stop before 1 MiB, and deleting one frees room.
		big := strings.Repeat("x", 7000)
		stored := 0
		for i := 0; i < 200; i++ {
			r := clientCall(t, alice, "PUT", base+fmt.Sprintf("content/k%d", i), map[string]any{"actions": []string{"notify"}, "pattern": big})
			if r.Status != 200 {
				want("rule past the total", r, "M_TOO_LARGE")
				break
			}
			stored++
		}
		if stored == 200 || stored < 100 {
			t.Fatalf("stored %d rules of 7 kB; want the total bound (1 MiB) to stop them", stored)
		}
		if r := clientCall(t, alice, "DELETE", base+"content/k0", nil); r.Status != 200 {
			t.Fatalf("deleting a rule at the bound: %d %s", r.Status, r.Raw)
		}
	})
}
