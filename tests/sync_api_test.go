package tests

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestSyncBadInput: malformed parameters are 400 M_INVALID_PARAM, never a 500.
func TestSyncBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		first := syncOnce(t, alice, "", "", 0)
		cases := []map[string]string{
			{"since": "garbage"},
			{"since": "s1"},
			{"since": "s999999999_0_0"}, // from the future
			{"since": first.NextBatch + "x"},
			{"timeout": "-5"},
			{"timeout": "soon"},
			{"full_state": "maybe"},
			{"set_presence": "busy"},
			{"filter": "12345"},       // no such stored filter
			{"filter": `{"room": 7}`}, // malformed inline filter
			// inline filters get POST /filter's validation
			{"filter": `{"room": {"timeline": {"limit": -1}}}`},
			{"filter": `{"event_format": "bogus"}`},
			{"filter": `{"room": {"timeline": {"types": ["\ud800"]}}}`},
			{"use_state_after": "yes"},
		}
		for _, q := range cases {
			_, err := rawSync(t, alice, q)
			if syncStatus(err) != http.StatusBadRequest || syncErrcode(err) != "M_INVALID_PARAM" {
				t.Errorf("sync %v: status %d errcode %q (%v)", q, syncStatus(err), syncErrcode(err), err)
			}
		}
		// A good token still works, and an empty long-poll answers with a usable token.
		resp := syncOnce(t, alice, first.NextBatch, "", 100)
		if resp.NextBatch == "" {
			t.Fatal("no next_batch")
		}
	})
}

// TestSyncTokenSurvivesRestart: a token from before a restart is accepted after it.
func TestSyncTokenSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	conf := testserver.Options{Configure: func(c *config.Config) { c.DataDir = dir }}
	srv := testserver.Start(t, "sqlite", conf)
	alice := srv.Register(t, "alice")
	room := createRoom(t, alice, nil)
	first := syncOnce(t, alice, "", "", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = srv.Shutdown(ctx)

	srv2 := testserver.Start(t, "sqlite", conf)
	alice2 := srv2.Client(t)
	alice2.SetCredentials(alice.UserID, alice.AccessToken)
	alice2.DeviceID = alice.DeviceID
	ev := sendText(t, alice2, room, "after restart")
	resp := syncUntil(t, alice2, first.NextBatch, "", func(r *mautrix.RespSync) bool {
		return r.Rooms.Join[room] != nil && syncHasEvent(timelineOf(r, room), ev)
	})
	if len(resp.Rooms.Join[room].Timeline.Events) != 1 {
		t.Fatalf("after restart the timeline has %d events, want only the new one", len(resp.Rooms.Join[room].Timeline.Events))
	}
}

// TestPushRulesAPI: defaults per spec, user rules, enabled/actions, deletion,
// and m.push_rules account data in /sync.
func TestPushRulesAPI(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		rules, err := alice.GetPushRules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rules.Override) == 0 || rules.Override[0].RuleID != ".m.rule.master" || rules.Override[0].Enabled {
			t.Fatalf("override rules do not start with a disabled master rule: %+v", rules.Override)
		}
		if r := rules.Underride[len(rules.Underride)-1]; r.RuleID != ".m.rule.encrypted" {
			t.Fatalf("last underride = %s", r.RuleID)
		}
		first := syncOnce(t, alice, "", "", 0)
		if !syncHasAccountData(first, "m.push_rules") {
			t.Fatal("initial sync lacks m.push_rules")
		}

		err = alice.PutPushRule(ctx, "global", pushrules.ContentRule, "cake", &mautrix.ReqPutPushRule{
			Actions: []*pushrules.PushAction{{Action: pushrules.ActionNotify}}, Pattern: "cake*",
		})
		if err != nil {
			t.Fatal(err)
		}
		r, err := alice.GetPushRule(ctx, "global", pushrules.ContentRule, "cake")
		if err != nil || r.Pattern != "cake*" || !r.Enabled || r.Default {
			t.Fatalf("rule = %+v, %v", r, err)
		}
		// Enabled and actions of a server-default rule.
		_, err = alice.MakeRequest(ctx, "PUT", alice.BuildClientURL("v3", "pushrules", "global", "override", ".m.rule.master", "enabled"), map[string]any{"enabled": true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var enabled struct{ Enabled bool }
		if _, err := alice.MakeRequest(ctx, "GET", alice.BuildClientURL("v3", "pushrules", "global", "override", ".m.rule.master", "enabled"), nil, &enabled); err != nil || !enabled.Enabled {
			t.Fatalf("master enabled = %v, %v", enabled.Enabled, err)
		}
		if _, err := alice.MakeRequest(ctx, "PUT", alice.BuildClientURL("v3", "pushrules", "global", "underride", ".m.rule.message", "actions"), map[string]any{"actions": []any{}}, nil); err != nil {
			t.Fatal(err)
		}
		var actions struct{ Actions []any }
		if _, err := alice.MakeRequest(ctx, "GET", alice.BuildClientURL("v3", "pushrules", "global", "underride", ".m.rule.message", "actions"), nil, &actions); err != nil || len(actions.Actions) != 0 {
			t.Fatalf("actions = %v, %v", actions.Actions, err)
		}
		// The change reaches /sync as account data.
		resp := syncUntil(t, alice, first.NextBatch, "", func(r *mautrix.RespSync) bool { return syncHasAccountData(r, "m.push_rules") })
		_ = resp

		// Bad input and missing rules.
		bad := []struct {
			method, kind, rule string
			body               any
			status             int
			code               string
		}{
			{"PUT", "override", ".mine", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", "colour", "x", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", "content", "nopattern", map[string]any{"actions": []any{}}, 400, "M_MISSING_PARAM"},
			{"PUT", "override", "noactions", map[string]any{}, 400, "M_BAD_JSON"},
			{"GET", "override", "missing", nil, 404, "M_NOT_FOUND"},
			{"DELETE", "override", "missing", nil, 404, "M_NOT_FOUND"},
			{"DELETE", "override", ".m.rule.master", nil, 403, "M_FORBIDDEN"},
		}
		for _, b := range bad {
			_, err := alice.MakeRequest(ctx, b.method, alice.BuildClientURL("v3", "pushrules", "global", b.kind, b.rule), b.body, nil)
			if syncStatus(err) != b.status || syncErrcode(err) != b.code {
				t.Errorf("%s %s/%s: %d %s, want %d %s", b.method, b.kind, b.rule, syncStatus(err), syncErrcode(err), b.status, b.code)
			}
		}
		if err := alice.DeletePushRule(ctx, "global", pushrules.ContentRule, "cake"); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.GetPushRule(ctx, "global", pushrules.ContentRule, "cake"); syncStatus(err) != 404 {
			t.Fatalf("deleted rule still there: %v", err)
		}
	})
}

func syncHasAccountData(r *mautrix.RespSync, typ string) bool {
	for _, e := range r.AccountData.Events {
		if e.Type.Type == typ {
			return true
		}
	}
	return false
}

// TestPushers: pushers are stored per user, replaced and deleted; bad input is rejected.
func TestPushers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		set := func(body map[string]any) error {
			_, err := alice.MakeRequest(ctx, "POST", alice.BuildClientURL("v3", "pushers", "set"), body, nil)
			return err
		}
		p := map[string]any{"app_id": "org.example.app", "pushkey": "key1", "kind": "http", "app_display_name": "App",
			"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": "https://push.example/_matrix/push/v1/notify"}}
		if err := set(p); err != nil {
			t.Fatal(err)
		}
		var list struct {
			Pushers []map[string]any `json:"pushers"`
		}
		if _, err := alice.MakeRequest(ctx, "GET", alice.BuildClientURL("v3", "pushers"), nil, &list); err != nil || len(list.Pushers) != 1 || list.Pushers[0]["pushkey"] != "key1" {
			t.Fatalf("pushers = %+v, %v", list.Pushers, err)
		}
		for _, bad := range []map[string]any{
			{"pushkey": "k", "kind": "http"},
			{"app_id": "a", "pushkey": "k", "kind": "carrier-pigeon", "app_display_name": "x", "device_display_name": "y", "lang": "en", "data": map[string]any{}},
			{"app_id": "a", "pushkey": "k", "kind": "http", "app_display_name": "x", "device_display_name": "y", "lang": "en", "data": map[string]any{}},
		} {
			if err := set(bad); syncStatus(err) != 400 {
				t.Errorf("pushers/set %v: %v", bad, err)
			}
		}
		if err := set(map[string]any{"app_id": "org.example.app", "pushkey": "key1", "kind": nil}); err != nil {
			t.Fatal(err)
		}
		list.Pushers = nil
		if _, err := alice.MakeRequest(ctx, "GET", alice.BuildClientURL("v3", "pushers"), nil, &list); err != nil || len(list.Pushers) != 0 {
			t.Fatalf("pusher not deleted: %+v, %v", list.Pushers, err)
		}
	})
}

// TestPresence: set and read presence, see it in /sync of a room-mate; with
// presence disabled nothing is stored or sent.
func TestPresence(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", enabled), func(t *testing.T) {
			t.Parallel()
			opts := testserver.Options{Configure: func(c *config.Config) { c.Presence.Enabled = enabled }}
			forEachBackendWith(t, opts, func(t *testing.T, srv *testserver.Server) {
				ctx := context.Background()
				alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
				shareRoom(t, alice, bob)
				bobFirst := syncOnce(t, bob, "", "", 0)
				msg := "out to lunch"
				if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: msg}); err != nil {
					t.Fatal(err)
				}
				got, err := bob.GetPresence(ctx, alice.UserID)
				if err != nil {
					t.Fatal(err)
				}
				if enabled && (got.Presence != event.PresenceUnavailable || got.StatusMsg != msg) {
					t.Fatalf("presence = %+v", got)
				}
				if !enabled && (got.Presence != event.PresenceOffline || got.StatusMsg != "") {
					t.Fatalf("presence disabled but got %+v", got)
				}
				// Someone who shares no room may not look.
				carol := srv.Register(t, "carol")
				if _, err := carol.GetPresence(ctx, alice.UserID); syncStatus(err) != 403 {
					t.Fatalf("stranger read presence: %v", err)
				}
				if enabled {
					syncUntil(t, bob, bobFirst.NextBatch, "", func(r *mautrix.RespSync) bool { return syncPresenceOf(r, alice.UserID) == event.PresenceUnavailable })
				} else {
					resp := syncOnce(t, bob, bobFirst.NextBatch, "", 500)
					if len(resp.Presence.Events) != 0 {
						t.Fatalf("presence disabled but sync carries %d presence events", len(resp.Presence.Events))
					}
				}
			})
		})
	}
}

// TestPresenceStatusMsgBounded: a status message over 1 KiB (it would reach
// every room-mate's /sync) is refused with 413 M_TOO_LARGE and changes
// nothing; one of exactly 1 KiB is accepted.
func TestPresenceStatusMsgBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		path := "/_matrix/client/v3/presence/" + string(alice.UserID) + "/status"
		ok := strings.Repeat("a", 1024)
		if r := clientCall(t, alice, "PUT", path, map[string]any{"presence": "online", "status_msg": ok}); r.Status != 200 {
			t.Fatalf("1 KiB status_msg: %d %s", r.Status, r.Raw)
		}
		for _, size := range []int{1025, 5 << 20} {
			r := clientCall(t, alice, "PUT", path, map[string]any{"presence": "unavailable", "status_msg": strings.Repeat("b", size)})
			if r.Status != 413 || r.errcode() != "M_TOO_LARGE" {
				t.Errorf("%d-byte status_msg: %d %s, want 413 M_TOO_LARGE", size, r.Status, r.errcode())
			}
		}
		got := must(alice.GetPresence(ctx, alice.UserID))
		if got.Presence != event.PresenceOnline || got.StatusMsg != ok {
			t.Errorf("refused updates changed presence: %s, %d-byte status", got.Presence, len(got.StatusMsg))
		}
	})
}

func syncPresenceOf(r *mautrix.RespSync, user id.UserID) event.Presence {
	for _, e := range r.Presence.Events {
		if e.Sender == user {
			_ = e.Content.ParseRaw(event.EphemeralEventPresence)
			if p, ok := e.Content.Parsed.(*event.PresenceEventContent); ok {
				return p.Presence
			}
		}
	}
	return ""
}

// TestToDeviceOnce: a to-device message arrives in one sync and, once the
// next sync acknowledged it, never again.
func TestToDeviceOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		first := syncOnce(t, bob, "", "", 0)
		evType := event.Type{Type: "org.example.ping", Class: event.ToDeviceEventType}
		_, err := alice.SendToDevice(ctx, evType, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			bob.UserID: {bob.DeviceID: {Raw: map[string]any{"n": 1}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		got := syncUntil(t, bob, first.NextBatch, "", func(r *mautrix.RespSync) bool { return len(r.ToDevice.Events) > 0 })
		if len(got.ToDevice.Events) != 1 || got.ToDevice.Events[0].Sender != alice.UserID {
			t.Fatalf("to_device = %+v", got.ToDevice.Events)
		}
		// Retrying the same since token (no acknowledgement yet) delivers it again.
		again := syncOnce(t, bob, first.NextBatch, "", 0)
		if len(again.ToDevice.Events) != 1 {
			t.Fatalf("unacknowledged message not redelivered: %d", len(again.ToDevice.Events))
		}
		next := syncOnce(t, bob, got.NextBatch, "", 200)
		if len(next.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged message delivered again")
		}
		after := syncOnce(t, bob, first.NextBatch, "", 0)
		if len(after.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged message not deleted")
		}
	})
}
