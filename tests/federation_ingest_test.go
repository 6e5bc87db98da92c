package tests

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/jsontime"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// ingestOrigin is a remote server for inbound transactions: it serves its
// signing key to hs.test's fetcher and answers /get_missing_events with
// the events it was given (refusing a body without its Content-Type).
type ingestOrigin struct {
	key     *mfed.SigningKey
	mu      sync.Mutex
	missing []json.RawMessage
	asked   []string // get_missing_events bodies received
}

func (o *ingestOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_matrix/key/v2/server":
		_ = json.NewEncoder(w).Encode(o.key.GenerateKeyResponse("remote.test", nil))
	case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/get_missing_events/"):
		// Like gomatrixserverlib (Complement, Dendrite): a body not labelled
		// application/json is a 400.
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"Bad Request"}`))
			return
		}
		body, _ := io.ReadAll(r.Body)
		o.mu.Lock()
		o.asked = append(o.asked, string(body))
		evs := o.missing
		o.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"events": evs})
	default:
		w.WriteHeader(404)
		_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED"}`))
	}
}

// ingestEvent builds an event of sender's (remote.test's key) on prevs at depth.
func ingestEvent(t *testing.T, srv *testserver.Server, key *mfed.SigningKey, roomID id.RoomID, sender id.UserID, evType string, stateKey *string, content string, prevs []id.EventID, depth int64) (json.RawMessage, id.EventID) {
	t.Helper()
	ctx := context.Background()
	row, err := srv.DB.GetRoom(ctx, string(roomID))
	if err != nil {
		t.Fatal(err)
	}
	version := id.RoomVersion(row.RoomVersion)
	p := &pdu.PDU{Type: evType, StateKey: stateKey, Sender: sender, RoomID: roomID, Depth: depth, PrevEvents: prevs,
		OriginServerTS: time.Now().UnixMilli(), Content: []byte(content)}
	for _, k := range p.AuthEventSelection(version) {
		if ev, err := srv.DB.CurrentStateEvent(ctx, string(roomID), k.Type, k.StateKey); err == nil {
			p.AuthEvents = append(p.AuthEvents, id.EventID(ev.EventID))
		}
	}
	if err := p.Sign(version, "remote.test", key.ID, key.Priv); err != nil {
		t.Fatal(err)
	}
	evID, err := p.GetEventID(version)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jsonv2.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw, evID
}

// TestIngestTransaction: a remote server's join and messages arrive in signed
// PUT /send transactions on a running homeserver (its key fetched over loopback
// HTTP), show in the local user's /sync, and a gap is filled by asking the
// origin's /get_missing_events through the transport's client.
func TestIngestTransaction(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			origin := &ingestOrigin{key: mfed.GenerateSigningKey()}
			rr := newRemoteRoom(t, backend, origin)
			n, srv, alice, room := rr.net, rr.srv, rr.alice, rr.room
			head := func() ([]id.EventID, int64) { return rr.head(t) }
			// Transactions arrive as other servers send them: PUT /send,
			// signed by remote.test (X-Matrix), through federationapi.
			client := n.client(t, "remote.test", origin.key)
			send := func(txnID string, pdus ...json.RawMessage) map[string]string {
				t.Helper()
				resp, err := client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: "hs.test", TxnID: txnID,
					Origin: "remote.test", OriginServerTS: jsontime.UM(time.Now()), PDUs: pdus})
				if err != nil {
					t.Fatalf("transaction %s: %v", txnID, err)
				}
				res := map[string]string{}
				for id, r := range resp.PDUs {
					res[string(id)] = r.Error
				}
				if len(res) != len(pdus) {
					t.Fatalf("transaction %s: %d results for %d PDUs", txnID, len(res), len(pdus))
				}
				return res
			}
			r := id.UserID("@r:remote.test")
			sk := string(r)
			prevs, depth := head()
			join, joinID := ingestEvent(t, srv, origin.key, room, r, "m.room.member", &sk, `{"membership":"join"}`, prevs, depth)
			if res := send("1", join); res[string(joinID)] != "" {
				t.Fatalf("join: %v", res)
			}
			prevs, depth = head()
			msg, msgID := ingestEvent(t, srv, origin.key, room, r, "m.room.message", nil, `{"msgtype":"m.text","body":"hello from remote"}`, prevs, depth)
			if res := send("2", msg); res[string(msgID)] != "" {
				t.Fatalf("message: %v", res)
			}

			// A gap: b is sent, a (its prev) is only served by /get_missing_events.
			prevs, depth = head()
			a, aID := ingestEvent(t, srv, origin.key, room, r, "m.room.message", nil, `{"msgtype":"m.text","body":"fetched a"}`, prevs, depth)
			b, bID := ingestEvent(t, srv, origin.key, room, r, "m.room.message", nil, `{"msgtype":"m.text","body":"sent b"}`, []id.EventID{aID}, depth+1)
			origin.mu.Lock()
			origin.missing = []json.RawMessage{a}
			origin.mu.Unlock()
			if res := send("3", b); res[string(bID)] != "" {
				t.Fatalf("gap: %v", res)
			}
			origin.mu.Lock()
			asked := origin.asked
			origin.mu.Unlock()
			if len(asked) != 1 || !strings.Contains(asked[0], string(bID)) {
				t.Fatalf("get_missing_events requests: %v", asked)
			}

			resp := clientCall(t, alice, "GET", "/_matrix/client/v3/sync", nil)
			raw, _ := json.Marshal(resp.Body)
			var bodies []string
			for _, ev := range gjson.GetBytes(raw, "rooms.join."+gjson.Escape(string(room))+".timeline.events").Array() {
				if b := ev.Get("content.body"); b.Exists() {
					bodies = append(bodies, b.Str)
				}
			}
			if got := strings.Join(bodies, "|"); !strings.Contains(got, "hello from remote|fetched a|sent b") {
				t.Fatalf("/sync timeline bodies %q", got)
			}
		})
	}
}
