package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// toDeviceInbox follows one device's to-device messages through /sync.
type toDeviceInbox struct {
	c     *mautrix.Client
	since string
	got   []string // "<sender> <n>", in the order received
}

// until syncs until the inbox holds n messages (30 s), then once more
// briefly: nothing beyond them arrives (no message twice).
func (in *toDeviceInbox) until(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(in.got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s: %d to-device messages after 30 s, want %d: %v", in.c.UserID, in.c.DeviceID, len(in.got), n, in.got)
		}
		in.sync(t, 2000)
	}
	in.sync(t, 300)
	return in.got
}

func (in *toDeviceInbox) sync(t *testing.T, timeoutMS int) {
	r := syncOnce(t, in.c, in.since, `{"room":{"rooms":[]}}`, timeoutMS)
	in.since = r.NextBatch
	for _, e := range r.ToDevice.Events {
		in.got = append(in.got, fmt.Sprintf("%s %v", e.Sender, e.Content.Raw["n"]))
	}
}

func sendToDevice(t *testing.T, c *mautrix.Client, txnID string, to map[string]map[string]any) {
	t.Helper()
	if r := clientCall(t, c, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txnID, map[string]any{"messages": to}); r.Status != 200 {
		t.Fatalf("sendToDevice %s: %d %s", txnID, r.Status, r.Raw)
	}
}

// TestFederationToDevice: to-device messages cross servers both ways, to one
// device and to "*", each delivered once and in order, also when the
// receiving server is down while they are sent (they arrive once it is
// back); an m.direct_to_device EDU whose sender is not of the origin is
// dropped.
func TestFederationToDevice(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			fast := func(c *config.Config) {
				c.Federation.Sender.MinBackoff.Duration = 100 * time.Millisecond
				c.Federation.Sender.MaxBackoff.Duration = 300 * time.Millisecond
			}
			a := n.start(t, backend, "a.test", fast)
			startB := n.restartable(t, backend, "b.test", fast)
			b := startB()
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			bob2 := b.Client(t)
			if _, err := bob2.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"}, Password: "password-bob",
				StoreCredentials: true}); err != nil {
				t.Fatal(err)
			}
			aliceIn := &toDeviceInbox{c: alice}
			bobIn, bob2In := &toDeviceInbox{c: bob}, &toDeviceInbox{c: bob2}
			for _, in := range []*toDeviceInbox{aliceIn, bobIn, bob2In} {
				in.sync(t, 0)
			}
			bobID, dev1 := bob.UserID.String(), bob.DeviceID.String()

			sendToDevice(t, alice, "t1", map[string]map[string]any{bobID: {dev1: map[string]int{"n": 1}}})
			sendToDevice(t, alice, "t2", map[string]map[string]any{bobID: {"*": map[string]int{"n": 2}}})
			sendToDevice(t, alice, "t2", map[string]map[string]any{bobID: {"*": map[string]int{"n": 2}}}) // a client retry
			sendToDevice(t, bob, "t1", map[string]map[string]any{alice.UserID.String(): {alice.DeviceID.String(): map[string]int{"n": 3}}})
			al := "@alice:a.test"
			if got := bobIn.until(t, 2); !slices.Equal(got, []string{al + " 1", al + " 2"}) {
				t.Fatalf("bob's first device: %v", got)
			}
			if got := bob2In.until(t, 1); !slices.Equal(got, []string{al + " 2"}) {
				t.Fatalf("bob's second device (\"*\"): %v", got)
			}
			if got := aliceIn.until(t, 1); !slices.Equal(got, []string{"@bob:b.test 3"}) {
				t.Fatalf("alice (b.test → a.test): %v", got)
			}

			// b.test down: alice's messages wait in a.test's queue, durably.
			if err := b.Shutdown(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			n.relays["b.test"].point("")
			n.relays["b.test"].cut()
			for i := 4; i <= 8; i++ {
				sendToDevice(t, alice, fmt.Sprintf("t%d", i), map[string]map[string]any{bobID: {dev1: map[string]int{"n": i}}})
			}
			time.Sleep(300 * time.Millisecond)
			if st, err := a.DB.FederationDestinationState(ctxT(t), "b.test"); err != nil || st.Failures == 0 {
				t.Fatalf("a.test's sender did not see b.test down: %+v, %v", st, err)
			}
			b = startB()
			bobBack := b.Client(t)
			bobBack.SetCredentials(bob.UserID, bob.AccessToken)
			bobBack.DeviceID = bob.DeviceID
			bobIn.c = bobBack
			want := []string{al + " 1", al + " 2", al + " 4", al + " 5", al + " 6", al + " 7", al + " 8"}
			if got := bobIn.until(t, len(want)); !slices.Equal(got, want) {
				t.Fatalf("after b.test's restart, bob's first device: %v, want %v", got, want)
			}

			// An EDU from a.test naming a sender of another server is
			// dropped; one naming a.test's own user (the control) is taken.
			fc := n.client(t, "a.test", a.SigningKey)
			edu := func(sender, msgID string, n int) mfed.EDU {
				raw, _ := json.Marshal(map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
					"sender": sender, "type": "m.test", "message_id": msgID,
					"messages": map[string]any{bobID: map[string]any{dev1: map[string]int{"n": n}}}}})
				return raw
			}
			req := &mfed.ReqSendTransaction{Destination: "b.test", TxnID: "forged-1", Origin: "a.test",
				PDUs: []mfed.PDU{}, EDUs: []mfed.EDU{edu("@mallory:c.test", "f1", 666), edu(al, "f2", 9)}}
			req.OriginServerTS.Time = time.Now()
			if _, err := fc.SendTransaction(ctxT(t), req); err != nil {
				t.Fatal(err)
			}
			want = append(want, al+" 9")
			if got := bobIn.until(t, len(want)); !slices.Equal(got, want) {
				t.Fatalf("after the forged EDU: %v, want %v", got, want)
			}
		})
	}
}
