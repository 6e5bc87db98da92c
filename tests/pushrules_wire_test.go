package tests

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// specRuleRE finds, in the spec's "Predefined Rules" text, the section
// headings and each rule's name (with "after" in our legacy file) and JSON.
var specRuleRE = regexp.MustCompile("##### Default (\\w+) Rules|`(\\.m\\.rule\\.[\\w.]+)`(?:\\*\\* \\(after `([^`]+)`\\))?[^\\n]*\\n[\\s\\S]*?```json\\n([\\s\\S]*?)```")

// specDefaultRules is the spec's default ruleset for userID, decoded from the
// spec's own text (tests/testdata), with the legacy rules in their v1.16 places.
func specDefaultRules(t *testing.T, userID string) map[string][]any {
	t.Helper()
	localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	rules := map[string][]any{"override": {}, "content": {}, "room": {}, "sender": {}, "underride": {}}
	for _, file := range []string{"spec_v1.19_predefined_push_rules.md", "spec_v1.16_legacy_push_rules.md"} {
		text, err := os.ReadFile("testdata/" + file)
		if err != nil {
			t.Fatal(err)
		}
		kind := ""
		for _, m := range specRuleRE.FindAllStringSubmatch(string(text), -1) {
			if m[1] != "" {
				kind = strings.ToLower(m[1])
				continue
			}
			js := strings.NewReplacer("[the user's Matrix ID]", userID, "[the local part of the user's Matrix ID]", localpart).Replace(m[4])
			var rule any
			if err := json.Unmarshal([]byte(js), &rule); err != nil {
				t.Fatalf("%s: %s: %v", file, m[2], err)
			}
			at := len(rules[kind])
			if m[3] != "" {
				at = slices.IndexFunc(rules[kind], func(r any) bool { return r.(map[string]any)["rule_id"] == m[3] }) + 1
				if at == 0 {
					t.Fatalf("%s: %s follows unknown rule %s", file, m[2], m[3])
				}
			}
			rules[kind] = slices.Insert(rules[kind], at, rule)
		}
	}
	if len(rules["override"]) < 12 || len(rules["underride"]) < 5 || len(rules["content"]) != 1 {
		t.Fatalf("spec text parsed into too few rules: %v", rules)
	}
	return rules
}

// TestDefaultPushRulesWireShape: the default push rules clients receive (GET
// /pushrules/, a single rule, and the m.push_rules account data of /sync) are
// the spec's text exactly: no "value": null on a highlight tweak, "pattern": ""
// kept on the tombstone and server_acl conditions, "conditions": [] on the
// master rule (nheko 0.11 rejected the whole event and ran without rules).
func TestDefaultPushRulesWireShape(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	alice := srv.Register(t, "alice")
	want := specDefaultRules(t, alice.UserID.String())
	decode := func(what string, v any) map[string]any {
		b, _ := json.Marshal(v)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		if m == nil {
			t.Fatalf("%s: not an object: %s", what, b)
		}
		return m
	}
	check := func(what string, global any) {
		t.Helper()
		got := decode(what, global)
		for kind, rules := range want {
			if !reflect.DeepEqual(got[kind], rules) {
				g, _ := json.Marshal(got[kind])
				w, _ := json.Marshal(rules)
				t.Errorf("%s %s:\n got %s\nwant %s", what, kind, g, w)
			}
		}
	}
	r := clientCall(t, alice, "GET", "/_matrix/client/v3/pushrules/", nil)
	check("GET /pushrules/", r.Body["global"])

	r = clientCall(t, alice, "GET", "/_matrix/client/v3/pushrules/global/override/.m.rule.tombstone", nil)
	var tombstone any
	for _, rule := range want["override"] {
		if rule.(map[string]any)["rule_id"] == ".m.rule.tombstone" {
			tombstone = rule
		}
	}
	if !reflect.DeepEqual(decode("tombstone", r.Body), tombstone) {
		t.Errorf("GET tombstone rule = %s", r.Raw)
	}

	r = clientCall(t, alice, "GET", "/_matrix/client/v3/sync", nil)
	found := false
	for _, ev := range obj(r.Body["account_data"])["events"].([]any) {
		if obj(ev)["type"] == "m.push_rules" {
			found = true
			check("/sync m.push_rules", obj(obj(ev)["content"])["global"])
		}
	}
	if !found {
		t.Fatalf("no m.push_rules in the initial sync: %.300s", r.Raw)
	}
}

// TestLegacyMentionHighlights: a message naming the user in its body, from a
// client that does not send m.mentions (nheko 0.11, bots), highlights (the
// legacy rules, Complement TestThreadedReceipts); with m.mentions present the
// body is not looked at.
func TestLegacyMentionHighlights(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	room := shareRoom(t, alice, bob)
	sendText(t, alice, room, "Hello "+bob.UserID.String()+"!")
	if _, err := alice.SendMessageEvent(t.Context(), room, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "bob, look", "m.mentions": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	last := sendText(t, alice, room, "no mention here")
	resp := syncUntil(t, bob, "", "", func(r *mautrix.RespSync) bool {
		j := r.Rooms.Join[room]
		return j != nil && syncHasEvent(j.Timeline.Events, last)
	})
	counts := resp.Rooms.Join[room].UnreadNotifications
	if counts == nil || counts.HighlightCount != 1 || counts.NotificationCount != 3 {
		t.Fatalf("bob's unread counts = %+v, want 3 notifications, 1 highlight", counts)
	}
}
