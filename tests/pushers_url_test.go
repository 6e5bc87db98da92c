package tests

import (
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

func pusherBody(url any) map[string]any {
	return map[string]any{"app_id": "org.example.app", "pushkey": "key1", "kind": "http", "app_display_name": "App",
		"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": url, "format": "event_id_only"}}
}

// TestPusherURLs: an http pusher's data.url must be an absolute http(s) URL
// with the spec's path /_matrix/push/v1/notify, on a public host (file:// and
// loopback were accepted), unless push.allow_private_gateways; free-text
// fields are bounded. Refused pushers are not stored.
func TestPusherURLs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		set := func(body map[string]any) rawResp {
			return clientCall(t, alice, "POST", "/_matrix/client/v3/pushers/set", body)
		}
		for _, u := range []string{
			"file:///etc/passwd",
			"gopher://push.example.org/_matrix/push/v1/notify",
			"push.example.org/_matrix/push/v1/notify",
			"/_matrix/push/v1/notify",
			"https://push.example.org/notify",
			"https://push.example.org/_matrix/push/v1/notify/../../x",
			"http://127.0.0.1:8080/_matrix/push/v1/notify",
			"https://localhost/_matrix/push/v1/notify",
			"https://gw.localhost./_matrix/push/v1/notify",
			"https://[::1]/_matrix/push/v1/notify",
			"https://[::ffff:127.0.0.1]/_matrix/push/v1/notify",
			"https://2130706433/_matrix/push/v1/notify", // 127.0.0.1 as inet_aton reads it
			"https://0x7f.1/_matrix/push/v1/notify",
			"https://10.1.2.3/_matrix/push/v1/notify",
			"https://169.254.169.254/_matrix/push/v1/notify",
			"https://push.example.org/_matrix/push/v1/notify?" + strings.Repeat("a", 3000),
		} {
			if r := set(pusherBody(u)); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("data.url %.80q = %d %s, want 400 M_INVALID_PARAM", u, r.Status, r.Raw)
			}
		}
		if r := set(pusherBody(5)); r.Status != 400 || r.errcode() != "M_BAD_JSON" {
			t.Errorf("data.url 5 = %d %s, want 400 M_BAD_JSON", r.Status, r.Raw)
		}
		for field, v := range map[string]string{"lang": strings.Repeat("e", 100), "app_display_name": strings.Repeat("x", 2000),
			"device_display_name": strings.Repeat("x", 2000), "profile_tag": strings.Repeat("x", 2000)} {
			body := pusherBody("https://push.example.org/_matrix/push/v1/notify")
			body[field] = v
			if r := set(body); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("%s of %d bytes = %d %s, want 400 M_INVALID_PARAM", field, len(v), r.Status, r.Raw)
			}
		}
		big := pusherBody("https://push.example.org/_matrix/push/v1/notify")
		big["data"].(map[string]any)["custom"] = strings.Repeat("x", 10000)
		if r := set(big); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("10 kB data = %d %s, want 400 M_INVALID_PARAM", r.Status, r.Raw)
		}
		if r := clientCall(t, alice, "GET", "/_matrix/client/v3/pushers", nil); r.Status != 200 || len(r.Body["pushers"].([]any)) != 0 {
			t.Fatalf("refused pushers were stored: %d %s", r.Status, r.Raw)
		}

		for _, u := range []string{"https://push.example.org/_matrix/push/v1/notify", "http://push.example.org:5000/_matrix/push/v1/notify"} {
			if r := set(pusherBody(u)); r.Status != 200 {
				t.Errorf("data.url %q = %d %s, want 200", u, r.Status, r.Raw)
			}
		}
	})
}

// TestPusherPrivateGatewaysAllowed: push.allow_private_gateways admits a
// gateway on loopback (development, tests); the path rule still holds.
func TestPusherPrivateGatewaysAllowed(t *testing.T) {
	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Push.AllowPrivateGateways = true
	}})
	alice := srv.Register(t, "alice")
	if r := clientCall(t, alice, "POST", "/_matrix/client/v3/pushers/set", pusherBody("http://127.0.0.1:8080/_matrix/push/v1/notify")); r.Status != 200 {
		t.Fatalf("loopback gateway with the allowance = %d %s", r.Status, r.Raw)
	}
	if r := clientCall(t, alice, "POST", "/_matrix/client/v3/pushers/set", pusherBody("file:///_matrix/push/v1/notify")); r.Status != 400 {
		t.Fatalf("file:// with the allowance = %d %s", r.Status, r.Raw)
	}
}

// TestPusherDataKeptExactly: a pusher's data is served back as the client set
// it; an integer beyond 2^53 is not rounded through a float on the way.
func TestPusherDataKeptExactly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		body := `{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en",` +
			`"data":{"url":"https://push.example.org/_matrix/push/v1/notify","big":9007199254740993,"format":"event_id_only"}}`
		if r := clientCall(t, alice, "POST", "/_matrix/client/v3/pushers/set", body); r.Status != 200 {
			t.Fatalf("set pusher = %d %s", r.Status, r.Raw)
		}
		r := clientCall(t, alice, "GET", "/_matrix/client/v3/pushers", nil)
		if r.Status != 200 || !strings.Contains(r.Raw, `"big":9007199254740993`) || !strings.Contains(r.Raw, `"format":"event_id_only"`) {
			t.Fatalf("pushers = %d %s", r.Status, r.Raw)
		}
	})
}
