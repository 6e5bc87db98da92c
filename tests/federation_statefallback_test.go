package tests

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/jsontime"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// stateOrigin is a remote server whose /get_missing_events fails and whose
// /state_ids and /event serve what the test put there.
type stateOrigin struct {
	key    *mfed.SigningKey
	mu     sync.Mutex
	state  map[string][]string // event ID → state before it
	events map[string]json.RawMessage
}

func (o *stateOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := r.URL.Path
	switch {
	case p == "/_matrix/key/v2/server":
		_ = json.NewEncoder(w).Encode(o.key.GenerateKeyResponse("remote.test", nil))
	case strings.HasPrefix(p, "/_matrix/federation/v1/get_missing_events/"):
		// Failing: a server that answers get_missing_events (even with
		// nothing) is not asked for the state of a pushed PDU's prevs.
		w.WriteHeader(404)
		_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED"}`))
	case strings.HasPrefix(p, "/_matrix/federation/v1/state_ids/"):
		st, ok := o.state[r.URL.Query().Get("event_id")]
		if !ok {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"pdu_ids": st, "auth_chain_ids": []string{}})
	case strings.HasPrefix(p, "/_matrix/federation/v1/event/"):
		ev, ok := o.events[strings.TrimPrefix(r.URL.RawPath, "/_matrix/federation/v1/event/")]
		if !ok {
			ev, ok = o.events[strings.TrimPrefix(p, "/_matrix/federation/v1/event/")]
		}
		if !ok {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"origin": "remote.test", "origin_server_ts": 1, "pdus": []json.RawMessage{ev}})
	default:
		w.WriteHeader(404)
		_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED"}`))
	}
}

// TestIngestStateFallback: a gap /get_missing_events cannot close is closed
// over HTTP with /state_ids and /event: the PDU shows in the local user's
// /sync and /messages, the fetched events (outliers) in neither; a remote
// that serves a badly signed state event gets its PDU refused (200 with the
// PDU's error, never a 500) and nothing stored.
func TestIngestStateFallback(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := ctxT(t)
			origin := &stateOrigin{key: mfed.GenerateSigningKey(), state: map[string][]string{}, events: map[string]json.RawMessage{}}
			rr := newRemoteRoom(t, backend, origin)
			n, srv, alice, room := rr.net, rr.srv, rr.alice, rr.room
			head := func() ([]id.EventID, int64) { return rr.head(t) }
			client := n.client(t, "remote.test", origin.key)
			txn := 0
			send := func(pdu json.RawMessage, evID id.EventID) string {
				t.Helper()
				txn++
				resp, err := client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: "hs.test", TxnID: string(rune('a' + txn)),
					Origin: "remote.test", OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{pdu}})
				if err != nil {
					t.Fatalf("transaction: %v", err) // a 500 too
				}
				return resp.PDUs[evID].Error
			}
			r := id.UserID("@r:remote.test")
			sk := string(r)
			prevs, depth := head()
			join, joinID := ingestEvent(t, srv, origin.key, room, r, "m.room.member", &sk, `{"membership":"join"}`, prevs, depth)
			if res := send(join, joinID); res != "" {
				t.Fatalf("join: %s", res)
			}
			// gap: a profile change x1 and a message x2 only the remote has; p on top.
			gap := func(name string) (x1ID, x2ID, pID id.EventID, x1, p json.RawMessage) {
				prevs, depth := head()
				state, err := srv.DB.CurrentStateEvents(ctx, string(room))
				if err != nil {
					t.Fatal(err)
				}
				x1, x1ID = ingestEvent(t, srv, origin.key, room, r, "m.room.member", &sk, `{"membership":"join","displayname":"`+name+`"}`, prevs, depth)
				x2, x2ID := ingestEvent(t, srv, origin.key, room, r, "m.room.message", nil, `{"msgtype":"m.text","body":"x2 `+name+`"}`, []id.EventID{x1ID}, depth+1)
				p, pID = ingestEvent(t, srv, origin.key, room, r, "m.room.message", nil, `{"msgtype":"m.text","body":"p `+name+`"}`, []id.EventID{x2ID}, depth+2)
				ids := []string{string(x1ID)}
				for _, e := range state {
					if !(e.Type == "m.room.member" && *e.StateKey == sk) {
						ids = append(ids, e.EventID)
					}
				}
				origin.mu.Lock()
				origin.state[string(x2ID)] = ids
				origin.events[string(x1ID)], origin.events[string(x2ID)] = x1, x2
				origin.mu.Unlock()
				return x1ID, x2ID, pID, x1, p
			}

			// A lie: x1 served with a broken signature.
			x1ID, x2ID, pID, x1, p := gap("liar")
			broken := []byte(strings.Replace(string(x1), gjson.GetBytes(x1, "signatures.remote\\.test.*").Str, strings.Repeat("A", 86), 1))
			origin.mu.Lock()
			origin.events[string(x1ID)] = broken
			origin.mu.Unlock()
			if res := send(p, pID); res == "" {
				t.Fatal("PDU accepted on a badly signed state")
			}
			for _, x := range []id.EventID{x1ID, x2ID, pID} {
				if _, err := srv.DB.GetEvent(ctx, string(x)); err == nil {
					t.Fatalf("%s stored after a lie", x)
				}
			}

			// The truth: the gap closes.
			x1ID, x2ID, pID, _, p = gap("honest")
			if res := send(p, pID); res != "" {
				t.Fatalf("PDU refused: %s", res)
			}
			for _, x := range []id.EventID{x1ID, x2ID} {
				if se, err := srv.DB.GetEvent(ctx, string(x)); err != nil || !se.Outlier {
					t.Fatalf("%s: %+v, %v; want an outlier", x, se, err)
				}
			}
			resp := clientCall(t, alice, "GET", "/_matrix/client/v3/sync", nil)
			body, _ := json.Marshal(resp.Body)
			var seen []string
			for _, ev := range gjson.GetBytes(body, "rooms.join."+gjson.Escape(string(room))+".timeline.events").Array() {
				seen = append(seen, ev.Get("event_id").Str)
			}
			msgs := clientCall(t, alice, "GET", "/_matrix/client/v3/rooms/"+string(room)+"/messages?dir=b&limit=100", nil)
			body, _ = json.Marshal(msgs.Body)
			for _, ev := range gjson.GetBytes(body, "chunk").Array() {
				seen = append(seen, ev.Get("event_id").Str)
			}
			joined := strings.Join(seen, " ")
			if strings.Count(joined, string(pID)) != 2 || strings.Contains(joined, string(x1ID)) || strings.Contains(joined, string(x2ID)) {
				t.Fatalf("/sync and /messages list %v; want p (%s) in both, no outlier", seen, pID)
			}
			name := clientCall(t, alice, "GET", "/_matrix/client/v3/rooms/"+string(room)+"/state/m.room.member/"+string(r), nil)
			if b, _ := json.Marshal(name.Body); gjson.GetBytes(b, "displayname").Str != "honest" {
				t.Fatalf("member state after the gap: %s", b)
			}
		})
	}
}
