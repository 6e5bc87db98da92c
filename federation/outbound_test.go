package federation

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
)

// strictRemote checks an inbound federation request the way
// gomatrixserverlib's VerifyHTTPRequest does (Complement's and Dendrite's
// servers): a body must be labelled application/json (400 "Bad Request"
// otherwise), and the X-Matrix signature must cover method, URI, origin,
// destination and the body. It records each accepted request's path and body.
type strictRemote struct {
	t    *testing.T
	name string
	key  *mfed.SigningKey // the requester's key
	mu   sync.Mutex
	got  map[string]json.RawMessage // path -> body
}

func (s *strictRemote) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if len(body) > 0 {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"Bad Request"}`)
			return
		}
	}
	auth := mfed.ParseXMatrixAuth(r.Header.Get("Authorization"))
	signed := map[string]any{"method": r.Method, "uri": r.URL.RequestURI(), "origin": auth.Origin, "destination": auth.Destination}
	if len(body) > 0 {
		signed["content"] = json.RawMessage(body)
	}
	msg, err := canonicaljson.Marshal(signed)
	if err == nil {
		err = signutil.VerifyJSONCanonical(s.key.Pub, auth.Signature, msg)
	}
	if err != nil || auth.Destination != s.name || auth.KeyID != s.key.ID {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errcode":"M_UNAUTHORIZED","error":"Invalid request signature"}`)
		return
	}
	s.mu.Lock()
	s.got[r.URL.Path] = body
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.Contains(r.URL.Path, "/send_join/"):
		_, _ = io.WriteString(w, `{"auth_chain":[],"state":[],"servers_in_room":[]}`)
	case strings.Contains(r.URL.Path, "/get_missing_events/"):
		_, _ = io.WriteString(w, `{"events":[]}`)
	default:
		_, _ = io.WriteString(w, `{}`)
	}
}

// TestOutboundRequestShape pins what the outbound client puts on the wire
// for requests with a body: Content-Type application/json (mautrix leaves it
// out; servers built on gomatrixserverlib refuse such a request with a 400,
// which failed every remote join and gap fill against Complement), a
// signature over the body, and the spec's paths and bodies for send_join
// (v2, the event as the body) and get_missing_events.
func TestOutboundRequestShape(t *testing.T) {
	key := mfed.GenerateSigningKey()
	remote := &strictRemote{t: t, name: "remote.test", key: key, got: map[string]json.RawMessage{}}
	ts := httptest.NewServer(remote)
	t.Cleanup(ts.Close)
	cfg := config.Default()
	cfg.ServerName = "me.test"
	cfg.Federation.Hosts = map[string]string{"remote.test": strings.TrimPrefix(ts.URL, "http://")}
	cfg.Federation.InsecureHTTPHosts = []string{"remote.test"}
	c, err := NewClient(cfg, key, AllowAll{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	room, evID := id.RoomID("!r:remote.test"), id.EventID("$join")
	joinEv := json.RawMessage(`{"type":"m.room.member","state_key":"@u:me.test","sender":"@u:me.test","room_id":"!r:remote.test","content":{"membership":"join"}}`)
	if _, err := c.SendJoin(ctx, &mfed.ReqSendJoin{RoomID: room, EventID: evID, Event: joinEv, Via: "remote.test"}); err != nil {
		t.Fatalf("send_join: %v", err)
	}
	if _, err := c.GetMissingEvents(ctx, &mfed.ReqGetMissingEvents{ServerName: "remote.test", RoomID: room,
		EarliestEvents: []id.EventID{"$a"}, LatestEvents: []id.EventID{"$b"}, Limit: 10}); err != nil {
		t.Fatalf("get_missing_events: %v", err)
	}

	remote.mu.Lock()
	defer remote.mu.Unlock()
	if got := remote.got["/_matrix/federation/v2/send_join/!r:remote.test/$join"]; string(got) != string(joinEv) {
		t.Errorf("send_join body %s (paths %v)", got, keys(remote.got))
	}
	var gme map[string]any
	if err := json.Unmarshal(remote.got["/_matrix/federation/v1/get_missing_events/!r:remote.test"], &gme); err != nil {
		t.Fatalf("get_missing_events body: %v (paths %v)", err, keys(remote.got))
	}
	want := map[string]any{"earliest_events": []any{"$a"}, "latest_events": []any{"$b"}, "limit": float64(10)}
	if g, w := mustJSON(t, gme), mustJSON(t, want); g != w {
		t.Errorf("get_missing_events body %s, want %s", g, w)
	}
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
