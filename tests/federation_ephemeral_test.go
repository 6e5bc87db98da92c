package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// eduLog records the EDUs of the transactions a server receives (through a
// proxy in front of it), to check what was sent and what was not.
type eduLog struct {
	mu   sync.Mutex
	edus []string // "origin type content"
}

// recordEDUs starts a proxy to addr that logs the EDUs of each PUT /send and
// returns its address, for a relay to point at.
func recordEDUs(t testing.TB, addr string, log *eduLog) string {
	t.Helper()
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			var txn struct {
				Origin string `json:"origin"`
				EDUs   []struct {
					Type    string          `json:"edu_type"`
					Content json.RawMessage `json:"content"`
				} `json:"edus"`
			}
			if json.Unmarshal(body, &txn) == nil {
				log.mu.Lock()
				for _, e := range txn.EDUs {
					log.edus = append(log.edus, txn.Origin+" "+e.Type+" "+string(e.Content))
				}
				log.mu.Unlock()
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// has reports whether an EDU of typ whose content mentions every word was logged.
func (l *eduLog) has(typ string, words ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.edus, func(e string) bool {
		if !strings.Contains(e, " "+typ+" ") {
			return false
		}
		for _, w := range words {
			if !strings.Contains(e, w) {
				return false
			}
		}
		return true
	})
}

// receiptContent is an m.receipt event's content: event → type → user → data.
type receiptContent map[string]map[string]map[string]map[string]any

// roomEphemeral returns the room's m.typing user IDs (seen: reported) and
// m.receipt contents in a sync response.
func roomEphemeral(resp *mautrix.RespSync, room id.RoomID) (typing []string, receipts []receiptContent, seen bool) {
	joined, ok := resp.Rooms.Join[room]
	if !ok {
		return nil, nil, false
	}
	for _, e := range joined.Ephemeral.Events {
		switch e.Type.Type {
		case "m.typing":
			seen = true
			typing = []string{}
			if users, ok := e.Content.Raw["user_ids"].([]any); ok {
				for _, u := range users {
					typing = append(typing, fmt.Sprint(u))
				}
			}
		case "m.receipt":
			raw, _ := json.Marshal(e.Content.Raw)
			var rc receiptContent
			_ = json.Unmarshal(raw, &rc)
			receipts = append(receipts, rc)
		}
	}
	return typing, receipts, seen
}

// typingIs is a sync condition: room's typing list (when reported) is users.
func typingIs(room id.RoomID, users ...string) func(*mautrix.RespSync) bool {
	return func(r *mautrix.RespSync) bool {
		typing, _, seen := roomEphemeral(r, room)
		return seen && slices.Equal(typing, users)
	}
}

// hasReceipt reports whether user's m.read receipt on ev (in thread, if
// not "") is among receipts.
func hasReceipt(receipts []receiptContent, ev id.EventID, user id.UserID, thread string) bool {
	return slices.ContainsFunc(receipts, func(c receiptContent) bool {
		data, ok := c[string(ev)]["m.read"][string(user)]
		return ok && (thread == "" || data["thread_id"] == thread)
	})
}

// receiptHas is a sync condition: user's m.read receipt on ev is in room.
func receiptHas(room id.RoomID, ev id.EventID, user id.UserID, thread string) func(*mautrix.RespSync) bool {
	return func(r *mautrix.RespSync) bool {
		_, receipts, _ := roomEphemeral(r, room)
		return hasReceipt(receipts, ev, user, thread)
	}
}

// presenceHas is a sync condition: the presence of user is state (and msg, if set).
func presenceHas(user id.UserID, state, msg string) func(*mautrix.RespSync) bool {
	return func(r *mautrix.RespSync) bool {
		return slices.ContainsFunc(r.Presence.Events, func(e *event.Event) bool {
			return e.Sender == user && e.Content.Raw["presence"] == state && (msg == "" || e.Content.Raw["status_msg"] == msg)
		})
	}
}

// TestFederationEphemeral: three Myelin servers. alice (a.test) and bob
// (b.test) share a room; carol (c.test, presence off) shares another room of
// a.test with dave, none with alice. Typing goes both ways and stops, read
// receipts go both ways (threaded too), presence both ways (GET status too);
// alice's presence is not sent to c.test (no shared room), c.test sends no
// presence and ignores dave's. A transaction of b.test naming a.test's user
// or a room bob is not in has those parts dropped; bob's typing in a room
// whose server ACL denies b.test is dropped by a.test.
func TestFederationEphemeral(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			defer recoverMust(t)
			noErr := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			n := newFedNet(t, "a.test", "b.test", "c.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			c := n.start(t, backend, "c.test", func(cfg *config.Config) { cfg.Presence.Enabled = false })
			var toA, toB, toC eduLog
			n.relays["a.test"].point(recordEDUs(t, a.Config.Listen.HTTP, &toA))
			n.relays["b.test"].point(recordEDUs(t, b.Config.Listen.HTTP, &toB))
			n.relays["c.test"].point(recordEDUs(t, c.Config.Listen.HTTP, &toC))
			ctx := ctxT(t)
			alice, dave := a.Register(t, "alice"), a.Register(t, "dave")
			bob, carol := b.Register(t, "bob"), c.Register(t, "carol")

			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			must(bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}))
			other := createRoom(t, dave, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			must(carol.JoinRoom(ctx, string(other), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}))
			aliceSince := syncUntil(t, alice, "", "", func(r *mautrix.RespSync) bool {
				return slices.ContainsFunc(timelineOf(r, room), func(e *event.Event) bool {
					return e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID)
				})
			}).NextBatch
			bobSince := syncOnce(t, bob, "", "", 0).NextBatch

			// Typing, a.test → b.test, then stopped.
			must(alice.UserTyping(ctx, room, true, 30*time.Second))
			bobSince = syncUntil(t, bob, bobSince, "", typingIs(room, string(alice.UserID))).NextBatch
			must(alice.UserTyping(ctx, room, false, 0))
			bobSince = syncUntil(t, bob, bobSince, "", typingIs(room)).NextBatch
			// b.test → a.test, then stopped.
			must(bob.UserTyping(ctx, room, true, 30*time.Second))
			aliceSince = syncUntil(t, alice, aliceSince, "", typingIs(room, string(bob.UserID))).NextBatch
			must(bob.UserTyping(ctx, room, false, 0))
			aliceSince = syncUntil(t, alice, aliceSince, "", typingIs(room)).NextBatch

			// Read receipts both ways; alice's threaded, bob's not.
			root := sendText(t, alice, room, "root")
			reply := sendText(t, bob, room, "reply")
			bobSince = syncUntil(t, bob, bobSince, "", func(r *mautrix.RespSync) bool {
				return syncHasEvent(timelineOf(r, room), root)
			}).NextBatch
			aliceSince = syncUntil(t, alice, aliceSince, "", func(r *mautrix.RespSync) bool {
				return syncHasEvent(timelineOf(r, room), reply)
			}).NextBatch
			noErr(bob.SendReceipt(ctx, room, root, event.ReceiptTypeRead, nil))
			aliceSince = syncUntil(t, alice, aliceSince, "", receiptHas(room, root, bob.UserID, "")).NextBatch
			noErr(alice.SendReceipt(ctx, room, reply, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: string(root)}))
			bobSince = syncUntil(t, bob, bobSince, "", receiptHas(room, reply, alice.UserID, string(root))).NextBatch
			// A private receipt never leaves a.test.
			noErr(alice.SendReceipt(ctx, room, reply, event.ReceiptTypeReadPrivate, nil))

			// Presence both ways.
			noErr(alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "hello from a"}))
			bobSince = syncUntil(t, bob, bobSince, "", presenceHas(alice.UserID, "online", "hello from a")).NextBatch
			noErr(alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable}))
			bobSince = syncUntil(t, bob, bobSince, "", presenceHas(alice.UserID, "unavailable", "")).NextBatch
			noErr(bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "hi from b"}))
			aliceSince = syncUntil(t, alice, aliceSince, "", presenceHas(bob.UserID, "online", "hi from b")).NextBatch
			if p := must(alice.GetPresence(ctx, bob.UserID)); p.Presence != event.PresenceOnline || p.StatusMsg != "hi from b" {
				t.Fatalf("alice's GET of bob's presence: %+v", p)
			}
			// dave's presence goes to c.test (carol shares his room), which
			// has presence off: it ignores it; carol's goes nowhere.
			noErr(dave.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "dave here"}))
			noErr(carol.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "carol here"}))
			syncOnce(t, carol, "", "", 0)
			deadline := time.Now().Add(15 * time.Second)
			for !toC.has("m.presence", string(dave.UserID)) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !toC.has("m.presence", string(dave.UserID)) {
				t.Fatal("dave's presence never reached c.test")
			}
			if _, err := c.DB.GetPresence(ctx, string(dave.UserID)); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("c.test (presence off) stored dave's presence: %v", err)
			}
			if toC.has("m.presence", string(alice.UserID)) {
				t.Fatal("alice's presence went to c.test, which shares no room with her")
			}
			if toA.has("m.presence", "c.test") {
				t.Fatal("c.test (presence off) sent presence")
			}
			if toB.has("m.receipt", string(event.ReceiptTypeReadPrivate)) {
				t.Fatal("a private receipt was sent")
			}

			// A transaction of b.test's own (its real key) naming a.test's user,
			// and bob in a room he is not in: dropped; the rest applied.
			forged := n.client(t, "b.test", b.SigningKey)
			edu := func(typ string, content any) mfed.EDU {
				raw, _ := json.Marshal(map[string]any{"edu_type": typ, "content": content})
				return raw
			}
			receipt := func(roomID id.RoomID, user id.UserID, ev id.EventID) map[string]any {
				return map[string]any{string(roomID): map[string]any{"m.read": map[string]any{
					string(user): map[string]any{"event_ids": []string{string(ev)}, "data": map[string]any{"ts": 1}}}}}
			}
			_, err := forged.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: "a.test", TxnID: "forged-edus",
				Origin: "b.test", OriginServerTS: jsontime.UM(time.Now()), PDUs: []mfed.PDU{}, EDUs: []mfed.EDU{
					edu("m.typing", map[string]any{"room_id": room, "user_id": alice.UserID, "typing": true}),
					edu("m.typing", map[string]any{"room_id": other, "user_id": bob.UserID, "typing": true}),
					edu("m.receipt", receipt(room, alice.UserID, root)),
					edu("m.receipt", receipt(other, bob.UserID, root)),
					edu("m.presence", map[string]any{"push": []any{map[string]any{"user_id": dave.UserID, "presence": "offline"}}}),
					edu("m.receipt", receipt(room, bob.UserID, reply)), // the sentinel: allowed
				}})
			if err != nil {
				t.Fatalf("b.test's transaction: %v", err)
			}
			aliceSince = syncUntil(t, alice, aliceSince, "", receiptHas(room, reply, bob.UserID, "")).NextBatch
			full := syncOnce(t, alice, "", "", 0)
			if typing, _, _ := roomEphemeral(full, room); slices.Contains(typing, string(alice.UserID)) {
				t.Fatalf("b.test made alice type: %v", typing)
			}
			if p, err := a.DB.GetPresence(ctx, string(dave.UserID)); err != nil || p.State != "online" {
				t.Fatalf("b.test set dave's presence: %+v %v", p, err)
			}
			daveSync := syncOnce(t, dave, "", "", 0)
			if typing, receipts, _ := roomEphemeral(daveSync, other); len(typing) != 0 || len(receipts) != 0 {
				t.Fatalf("bob's EDUs in a room he is not in: typing %v receipts %v", typing, receipts)
			}
			if _, receipts, _ := roomEphemeral(full, room); hasReceipt(receipts, root, alice.UserID, "") ||
				!hasReceipt(receipts, reply, alice.UserID, string(root)) {
				t.Fatalf("b.test moved alice's receipt: %v", receipts)
			}

			// A room whose server ACL denies b.test: bob's typing there is
			// dropped by a.test; in the other room it arrives.
			aclRoom := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			must(bob.JoinRoom(ctx, string(aclRoom), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}))
			must(alice.SendStateEvent(ctx, aclRoom, event.StateServerACL, "", map[string]any{
				"allow": []string{"*"}, "deny": []string{"b.test"}, "allow_ip_literals": true}))
			must(bob.UserTyping(ctx, aclRoom, true, 30*time.Second))
			must(bob.UserTyping(ctx, room, true, 30*time.Second))
			syncUntil(t, alice, aliceSince, "", typingIs(room, string(bob.UserID)))
			full = syncOnce(t, alice, "", "", 0)
			if typing, _, _ := roomEphemeral(full, aclRoom); len(typing) != 0 {
				t.Fatalf("typing from an ACL-denied server: %v", typing)
			}
		})
	}
}
