package tests

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// fakeDestination is a remote server for the federation sender to send to:
// it serves its signing key, verifies each transaction's X-Matrix signature
// with the origin's key and records what it received.
type fakeDestination struct {
	t       *testing.T
	name    string
	key     *mfed.SigningKey
	origin  string
	addr    string
	mu      sync.Mutex
	down    bool
	refuse  int // answer this many transactions 400 M_BAD_JSON (a refusal as a whole)
	refused []string
	ourKey  *mfed.SigningKey
	txns    []string            // transaction IDs, in order received
	bodies  []string            // message bodies, in order received (first receipt of each txn)
	txnPDU  map[string][]string // txn ID → its PDUs' bodies/types, to check retries carry the same
	senders []string
	bad     []string // what failed verification
}

func newFakeDestination(t *testing.T, name, origin string) *fakeDestination {
	return &fakeDestination{t: t, name: name, key: mfed.GenerateSigningKey(), origin: origin, txnPDU: map[string][]string{}}
}

// serve listens on loopback and returns the address.
func (f *fakeDestination) serve(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func (f *fakeDestination) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down { // a kept-alive connection through the relay: cut it
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
		return
	}
	switch {
	case r.URL.Path == "/_matrix/key/v2/server":
		_ = json.NewEncoder(w).Encode(f.key.GenerateKeyResponse(f.name, nil))
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/"):
		body, _ := io.ReadAll(r.Body)
		txn := strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/send/")
		if err := f.verify(r, body); err != nil {
			f.mu.Lock()
			f.bad = append(f.bad, err.Error())
			f.mu.Unlock()
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"errcode":"M_UNAUTHORIZED"}`))
			return
		}
		f.mu.Lock()
		if f.refuse > 0 {
			f.refuse--
			f.refused = append(f.refused, txn)
			f.mu.Unlock()
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"errcode":"M_BAD_JSON","error":"refused by the test"}`))
			return
		}
		f.mu.Unlock()
		var items []string
		var senders []string
		for _, p := range gjson.GetBytes(body, "pdus").Array() {
			item := p.Get("type").String()
			if b := p.Get("content.body"); b.Exists() {
				item = b.String()
			}
			items = append(items, item)
			senders = append(senders, p.Get("sender").String())
		}
		f.mu.Lock()
		if prev, ok := f.txnPDU[txn]; ok {
			if strings.Join(prev, ",") != strings.Join(items, ",") {
				f.bad = append(f.bad, "txn "+txn+" retried with other PDUs")
			}
		} else {
			f.txnPDU[txn] = items
			f.txns = append(f.txns, txn)
			f.bodies = append(f.bodies, items...)
			f.senders = append(f.senders, senders...)
		}
		f.mu.Unlock()
		_, _ = w.Write([]byte(`{"pdus":{}}`))
	default:
		w.WriteHeader(404)
		_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED"}`))
	}
}

func (f *fakeDestination) verify(r *http.Request, body []byte) error {
	xma := mfed.ParseXMatrixAuth(r.Header.Get("Authorization"))
	if xma.Origin != f.origin || xma.Destination != f.name {
		return errString("X-Matrix origin/destination " + xma.Origin + "/" + xma.Destination)
	}
	f.mu.Lock()
	key := f.ourKey
	f.mu.Unlock()
	if key == nil || xma.KeyID != key.ID {
		return errString("unknown key " + string(xma.KeyID))
	}
	signed := map[string]any{"method": r.Method, "uri": r.RequestURI, "origin": xma.Origin, "destination": xma.Destination,
		"content": json.RawMessage(body), "signatures": map[string]map[id.KeyID]string{xma.Origin: {xma.KeyID: xma.Signature}}}
	return signutil.VerifyJSON(xma.Origin, xma.KeyID, key.Pub, signed)
}

type errString string

func (e errString) Error() string { return string(e) }

func (f *fakeDestination) received() (bodies, txns, senders, bad []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bodies...), append([]string(nil), f.txns...), append([]string(nil), f.senders...), append([]string(nil), f.bad...)
}

// messages is what was received that is not a state event type (the bodies).
func messages(items []string) []string {
	var out []string
	for _, s := range items {
		if !strings.HasPrefix(s, "m.room.") {
			out = append(out, s)
		}
	}
	return out
}

// waitMessages waits until the destination received want messages.
func (f *fakeDestination) waitMessages(t *testing.T, want int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		bodies, _, _, bad := f.received()
		if len(bad) > 0 {
			t.Fatalf("destination saw bad transactions: %v", bad)
		}
		if m := messages(bodies); len(m) >= want || time.Now().After(deadline) {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// remoteMember builds userID's m.room.member event as its server (signing
// with key) would, on the room's forward extremities, for roomserver.Input.
func remoteMember(t testing.TB, srv *testserver.Server, key *mfed.SigningKey, roomID id.RoomID, userID id.UserID, membership string) []byte {
	t.Helper()
	ctx := context.Background()
	row, err := srv.DB.GetRoom(ctx, string(roomID))
	if err != nil {
		t.Fatal(err)
	}
	version := id.RoomVersion(row.RoomVersion)
	sk := string(userID)
	p := &pdu.PDU{Type: "m.room.member", StateKey: &sk, Sender: userID, RoomID: roomID, Depth: row.MaxDepth + 1,
		OriginServerTS: time.Now().UnixMilli(), Content: []byte(`{"membership":"` + membership + `"}`)}
	for _, x := range row.Extremities {
		p.PrevEvents = append(p.PrevEvents, id.EventID(x))
	}
	for _, k := range p.AuthEventSelection(version) {
		if ev, err := srv.DB.CurrentStateEvent(ctx, string(roomID), k.Type, k.StateKey); err == nil {
			p.AuthEvents = append(p.AuthEvents, id.EventID(ev.EventID))
		}
	}
	if err := p.Sign(version, userID.Homeserver(), key.ID, key.Priv); err != nil {
		t.Fatal(err)
	}
	raw, err := jsonv2.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// senderSetup: a server hs.test with a public room that @r:remote.test (the
// fake destination) joined over federation.
// Every start of hs.test uses one data directory and database (restarts).
func senderSetup(t *testing.T, backend string, configure ...func(*config.Config)) (*fedNet, *fakeDestination, *testserver.Server, *mautrix.Client, id.RoomID, func() *testserver.Server) {
	n := newFedNet(t, "hs.test", "remote.test")
	dest := newFakeDestination(t, "remote.test", "hs.test")
	dest.addr = dest.serve(t)
	n.relays["remote.test"].point(dest.addr)
	dir := t.TempDir()
	var dbURL string
	start := func() *testserver.Server {
		srv := n.start(t, backend, "hs.test", func(c *config.Config) {
			c.DataDir = dir
			if dbURL == "" {
				dbURL = c.Database.URL
			}
			c.Database.URL = dbURL
			for _, f := range configure {
				f(c)
			}
		})
		dest.mu.Lock()
		dest.ourKey = srv.SigningKey
		dest.mu.Unlock()
		return srv
	}
	srv := start()
	alice := srv.Register(t, "alice")
	room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if _, err := srv.Rooms.Input(context.Background(), room, remoteMember(t, srv, dest.key, room, "@r:remote.test", "join"), "remote.test"); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	return n, dest, srv, alice, room, start
}

// TestFederationSenderDelivers: our events in a room with a remote member
// reach its server in order, in signed transactions; the remote server's own
// events are not echoed back to it.
func TestFederationSenderDelivers(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			_, dest, srv, alice, room, _ := senderSetup(t, backend)
			var want []string
			for i := range 5 {
				body := "hello " + string(rune('a'+i))
				sendText(t, alice, room, body)
				want = append(want, body)
			}
			leave := remoteMember(t, srv, dest.key, room, "@r:remote.test", "leave")
			got := dest.waitMessages(t, len(want), 10*time.Second)
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("destination received %q, want %q", got, want)
			}
			// The remote user leaves (their event, not echoed); our next message goes nowhere.
			if _, err := srv.Rooms.Input(context.Background(), room, leave, "remote.test"); err != nil {
				t.Fatalf("remote leave: %v", err)
			}
			sendText(t, alice, room, "after the leave")
			time.Sleep(500 * time.Millisecond)
			bodies, txns, senders, _ := dest.received()
			for _, s := range senders {
				if s != "@alice:hs.test" {
					t.Fatalf("a PDU of %s was sent to its own server", s)
				}
			}
			if m := messages(bodies); len(m) != len(want) {
				t.Fatalf("after the remote leave the destination received %q", m)
			}
			if len(txns) == 0 {
				t.Fatal("no transactions")
			}
		})
	}
}

// TestFederationSenderOutageAndRestart: with the destination refusing
// connections the events stay queued and the backoff grows; the server
// restarts while it is down; once it is up everything arrives once, in
// order, and the backoff resets.
func TestFederationSenderOutageAndRestart(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			n, dest, srv, alice, room, start := senderSetup(t, backend)
			sendText(t, alice, room, "before")
			dest.waitMessages(t, 1, 10*time.Second)
			relay := n.relays["remote.test"]
			setDown := func(d bool) {
				dest.mu.Lock()
				dest.down = d
				dest.mu.Unlock()
				if d {
					relay.point("") // new connections are refused
				} else {
					relay.point(dest.addr)
				}
			}
			setDown(true)
			var want = []string{"before"}
			for i := range 3 {
				body := "down " + string(rune('a'+i))
				sendText(t, alice, room, body)
				want = append(want, body)
			}
			ctx := context.Background()
			waitFailures := func(srv *testserver.Server, atLeast int64) {
				t.Helper()
				deadline := time.Now().Add(15 * time.Second)
				for {
					st, err := srv.DB.FederationDestinationState(ctx, "remote.test")
					if err != nil {
						t.Fatal(err)
					}
					if st.Failures >= atLeast {
						if st.BackoffUntil <= time.Now().UnixMilli() && st.Failures == atLeast {
							t.Fatalf("failed %d times and no backoff: %+v", st.Failures, st)
						}
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("destination state %+v, want %d failures", st, atLeast)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			waitFailures(srv, 1)
			shutdown, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(shutdown); err != nil {
				t.Fatal(err)
			}
			srv = start()
			alice2 := srv.Client(t)
			alice2.SetCredentials(alice.UserID, alice.AccessToken)
			alice2.DeviceID = alice.DeviceID
			sendText(t, alice2, room, "after restart")
			want = append(want, "after restart")
			// The persisted backoff survives the restart; the next attempt fails too.
			waitFailures(srv, 2)
			st, _ := srv.DB.FederationDestinationState(ctx, "remote.test")
			if st.Failures < 2 || st.TxnID == "" {
				t.Fatalf("after two failures: %+v", st)
			}
			setDown(false)
			got := dest.waitMessages(t, len(want), 30*time.Second)
			time.Sleep(300 * time.Millisecond)
			bodies, _, _, bad := dest.received()
			if len(bad) > 0 {
				t.Fatal(bad)
			}
			if got = messages(bodies); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("destination received %q, want %q (once each, in order)", got, want)
			}
			st, _ = srv.DB.FederationDestinationState(ctx, "remote.test")
			if st.Failures != 0 || st.BackoffUntil != 0 || st.TxnID != "" || st.LastSuccess == 0 {
				t.Fatalf("after delivery the backoff was not reset: %+v", st)
			}
		})
	}
}

// TestFederationSenderDropsRefusedTransaction: a destination that refuses a
// transaction as a whole (400) is retried with backoff, and after
// federation.sender.refusals_before_drop refusals of the same transaction it
// is dropped and counted, and what was queued behind it is delivered. An
// outage (connections refused) is never dropped that way.
func TestFederationSenderDropsRefusedTransaction(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			_, dest, srv, alice, room, _ := senderSetup(t, backend, func(c *config.Config) {
				c.Federation.Sender.MinBackoff.Duration = 100 * time.Millisecond
				c.Federation.Sender.MaxBackoff.Duration = 200 * time.Millisecond
				c.Federation.Sender.RefusalsBeforeDrop = 3
			})
			dest.mu.Lock()
			dest.refuse = 3
			dest.mu.Unlock()
			sendText(t, alice, room, "poison")
			// The three refusals are of one transaction; then it is dropped.
			deadline := time.Now().Add(10 * time.Second)
			for {
				dest.mu.Lock()
				refused := append([]string(nil), dest.refused...)
				dest.mu.Unlock()
				if len(refused) == 3 {
					if refused[0] != refused[1] || refused[1] != refused[2] {
						t.Fatalf("refusals of different transactions: %v", refused)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("refusals so far: %v", refused)
				}
				time.Sleep(20 * time.Millisecond)
			}
			sendText(t, alice, room, "after")
			got := dest.waitMessages(t, 1, 10*time.Second)
			if strings.Join(got, "|") != "after" {
				t.Fatalf("after the drop the destination received %q, want only \"after\"", got)
			}
			// The destination answers before the sender records the
			// acknowledgement: wait for it.
			for deadline := time.Now().Add(5 * time.Second); ; {
				st, err := srv.DB.FederationDestinationState(context.Background(), "remote.test")
				if err != nil {
					t.Fatal(err)
				}
				if st.Failures == 0 && st.TxnID == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("destination state after delivery %+v", st)
				}
				time.Sleep(20 * time.Millisecond)
			}
			metrics := do(t, srv, "GET", "/metrics", "", nil).Raw
			if !strings.Contains(metrics, `myelin_federation_transactions_total{result="dropped"} 1`) {
				t.Fatalf("no dropped transaction counted:\n%s", metrics)
			}
		})
	}
}
