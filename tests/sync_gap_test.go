package tests

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/jsontime"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// gapOrigin is a stateOrigin that also answers /backfill with the events
// the test lists there (newest first).
type gapOrigin struct {
	*stateOrigin
	backfill []json.RawMessage
}

func (o *gapOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/backfill/") {
		o.mu.Lock()
		pdus := o.backfill
		o.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"origin": "remote.test", "origin_server_ts": 1, "pdus": pdus})
		return
	}
	o.stateOrigin.ServeHTTP(w, r)
}

// TestSyncTimelineGap: a PDU accepted over a gap (its prev events fetched
// as state with /state_ids, so stored as outliers) is flagged after_gap; an
// incremental and an initial /sync and an incremental sliding sync whose
// timeline holds it start the timeline at it, limited, with the state
// before it (the profile change inside the gap), and /messages from its
// prev_batch backfills the gap and pages back through it in order, then
// into what came before. Events without a gap are not flagged.
func TestSyncTimelineGap(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := ctxT(t)
			origin := &gapOrigin{stateOrigin: &stateOrigin{key: mfed.GenerateSigningKey(), state: map[string][]string{}, events: map[string]json.RawMessage{}}}
			rr := newRemoteRoom(t, backend, origin)
			n, srv, alice, room := rr.net, rr.srv, rr.alice, rr.room
			head := func() ([]id.EventID, int64) { return rr.head(t) }
			client := n.client(t, "remote.test", origin.key)
			send := func(pdu json.RawMessage, evID id.EventID, txn string) {
				t.Helper()
				resp, err := client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: "hs.test", TxnID: txn,
					Origin: "remote.test", OriginServerTS: jsontime.UM(time.Now()), PDUs: []json.RawMessage{pdu}})
				if err != nil {
					t.Fatalf("transaction: %v", err)
				}
				if e := resp.PDUs[evID].Error; e != "" {
					t.Fatalf("PDU %s refused: %s", evID, e)
				}
			}
			r := id.UserID("@r:remote.test")
			sk := string(r)
			prevs, depth := head()
			join, joinID := ingestEvent(t, srv, origin.key, room, r, "m.room.member", &sk, `{"membership":"join"}`, prevs, depth)
			send(join, joinID, "join")
			sendText(t, alice, room, "before")

			roomPath := "rooms.join." + gjson.Escape(string(room))
			syncBody := func(since string) []byte {
				t.Helper()
				path := "/_matrix/client/v3/sync?timeout=0"
				if since != "" {
					path += "&since=" + url.QueryEscape(since)
				}
				resp := clientCall(t, alice, "GET", path, nil)
				if resp.Status != 200 {
					t.Fatalf("/sync: %d %s", resp.Status, resp.Raw)
				}
				b, _ := json.Marshal(resp.Body)
				return b
			}
			since := gjson.GetBytes(syncBody(""), "next_batch").Str
			ss := slidingSync(t, alice, "", 0, allRoomsList(10, [][]string{{"m.room.member", "*"}}))
			pos, _ := ss["pos"].(string)

			midID := sendText(t, alice, room, "mid")
			// The gap: a profile change x1 and a message x2 only the remote
			// has; p on top reaches us and its prevs come as state.
			prevs, depth = head()
			state, err := srv.DB.CurrentStateEvents(ctx, string(room))
			if err != nil {
				t.Fatal(err)
			}
			x1, x1ID := ingestEvent(t, srv, origin.key, room, r, "m.room.member", &sk, `{"membership":"join","displayname":"gappy"}`, prevs, depth)
			x2, x2ID := ingestEvent(t, srv, origin.key, room, r, "m.room.message", nil, `{"msgtype":"m.text","body":"x2"}`, []id.EventID{x1ID}, depth+1)
			p, pID := ingestEvent(t, srv, origin.key, room, r, "m.room.message", nil, `{"msgtype":"m.text","body":"p"}`, []id.EventID{x2ID}, depth+2)
			ids := []string{string(x1ID)}
			for _, e := range state {
				if !(e.Type == "m.room.member" && *e.StateKey == sk) {
					ids = append(ids, e.EventID)
				}
			}
			origin.mu.Lock()
			origin.state[string(x2ID)] = ids
			origin.events[string(x1ID)], origin.events[string(x2ID)] = x1, x2
			origin.backfill = []json.RawMessage{x2, x1}
			origin.mu.Unlock()
			send(p, pID, "gap")
			afterID := sendText(t, alice, room, "after")

			// The flag: on p only.
			for x, want := range map[id.EventID]bool{pID: true, midID: false, afterID: false, joinID: false, x1ID: false} {
				if se, err := srv.DB.GetEvent(ctx, string(x)); err != nil || se.AfterGap != want {
					t.Fatalf("%s: after_gap %v (%v), want %v", x, se != nil && se.AfterGap, err, want)
				}
			}

			ids2 := func(res gjson.Result) []string {
				var out []string
				for _, e := range res.Array() {
					out = append(out, e.Get("event_id").Str)
				}
				return out
			}
			wantTL := strings.Join([]string{string(pID), string(afterID)}, " ")
			var prevBatch string
			for _, c := range []struct{ name, since string }{{"incremental", since}, {"initial", ""}} {
				b := syncBody(c.since)
				tl := gjson.GetBytes(b, roomPath+".timeline")
				if got := strings.Join(ids2(tl.Get("events")), " "); got != wantTL || !tl.Get("limited").Bool() {
					t.Fatalf("%s /sync timeline: limited %v, %s; want limited, %s (p, after; not mid)", c.name, tl.Get("limited").Bool(), got, wantTL)
				}
				// The state before p holds r's profile from the gap.
				if st := ids2(gjson.GetBytes(b, roomPath+".state.events")); !strings.Contains(strings.Join(st, " "), string(x1ID)) {
					t.Fatalf("%s /sync state %v lacks the gap's member event %s", c.name, st, x1ID)
				}
				if c.since != "" {
					prevBatch = tl.Get("prev_batch").Str
				}
			}

			res := ssRooms(slidingSync(t, alice, pos, 0, allRoomsList(10, [][]string{{"m.room.member", "*"}})))
			sr := obj(res[string(room)])
			var ssIDs []string
			for _, e := range asList(sr["timeline"]) {
				ssIDs = append(ssIDs, obj(e)["event_id"].(string))
			}
			if got := strings.Join(ssIDs, " "); got != wantTL || sr["limited"] != true || sr["prev_batch"] != prevBatch {
				t.Fatalf("sliding sync: limited %v, prev_batch %v, timeline %s; want limited, %s, %s", sr["limited"], sr["prev_batch"], got, prevBatch, wantTL)
			}
			var rsIDs []string
			for _, e := range asList(sr["required_state"]) {
				rsIDs = append(rsIDs, obj(e)["event_id"].(string))
			}
			if !strings.Contains(strings.Join(rsIDs, " "), string(x1ID)) {
				t.Fatalf("sliding sync required_state %v lacks %s", rsIDs, x1ID)
			}

			// /messages from prev_batch: the gap (backfilled now), then mid.
			msgs := clientCall(t, alice, "GET", "/_matrix/client/v3/rooms/"+string(room)+"/messages?dir=b&limit=3&from="+url.QueryEscape(prevBatch), nil)
			b, _ := json.Marshal(msgs.Body)
			want := strings.Join([]string{string(x2ID), string(x1ID), string(midID)}, " ")
			if got := strings.Join(ids2(gjson.GetBytes(b, "chunk")), " "); got != want {
				t.Fatalf("/messages from prev_batch %s: %s; want x2, x1, mid: %s", prevBatch, got, want)
			}
			if se, err := srv.DB.GetEvent(ctx, string(x2ID)); err != nil || se.Outlier {
				t.Fatalf("x2 not backfilled: %+v, %v", se, err)
			}
		})
	}
}
