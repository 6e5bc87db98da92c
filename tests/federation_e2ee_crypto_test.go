//go:build goolm

package tests

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// End-to-end encryption across servers with mautrix-go's crypto (pure-Go
// Olm): every key, to-device message and room event goes through the two
// servers and the federation between them; nothing is handed from one
// client to the other in the test.

// fedWait bounds each wait for something to cross the federation.
const fedWait = 30 * time.Second

// syncUntil syncs the device (handing its to-device messages to its crypto
// machine) until cond holds for a response, for at most fedWait; it reports
// whether cond held.
func (d *e2eeDevice) syncUntil(t *testing.T, cond func(*mautrix.RespSync) bool) bool {
	t.Helper()
	deadline := time.Now().Add(fedWait)
	for time.Now().Before(deadline) {
		if cond(d.syncOnce(t, 1000)) {
			return true
		}
	}
	return false
}

// sendEncrypted encrypts body with the device's outbound Megolm session of
// room and sends it to the room through its server.
func (d *e2eeDevice) sendEncrypted(t *testing.T, room id.RoomID, body string) id.EventID {
	t.Helper()
	enc := encryptText(t, d, room, body)
	resp, err := d.client.SendMessageEvent(context.Background(), room, event.EventEncrypted, enc)
	if err != nil {
		t.Fatalf("%s sending %q encrypted: %v", d.client.UserID, body, err)
	}
	return resp.EventID
}

// awaitDecrypted syncs the device until eventID has come in room's timeline
// and its room key over to-device, and returns the decrypted body.
func (d *e2eeDevice) awaitDecrypted(t *testing.T, room id.RoomID, eventID id.EventID) string {
	t.Helper()
	var got *event.Event
	var body string
	var lastErr error
	ok := d.syncUntil(t, func(r *mautrix.RespSync) bool {
		if joined := r.Rooms.Join[room]; got == nil && joined != nil {
			for _, evt := range joined.Timeline.Events {
				if evt.ID != eventID {
					continue
				}
				if evt.Type != event.EventEncrypted {
					t.Fatalf("%s arrived as %s, not encrypted", eventID, evt.Type.Type)
				}
				evt.Type.Class, evt.RoomID = event.MessageEventType, room
				if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
					t.Fatalf("parsing %s: %v", eventID, err)
				}
				got = evt
			}
		}
		if got == nil {
			return false
		}
		body, lastErr = d.decryptEvent(got)
		return lastErr == nil
	})
	if !ok {
		t.Fatalf("%s/%s: %s arrived %v, last decryption error: %v", d.client.UserID, d.client.DeviceID, eventID, got != nil, lastErr)
	}
	return body
}

// createEncryptedRoom: creator makes a private room with m.room.encryption
// set, inviting invitee, who joins through via.
func createEncryptedRoom(t *testing.T, creator, invitee *mautrix.Client, via string) id.RoomID {
	t.Helper()
	ctx := ctxT(t)
	room := createRoom(t, creator, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Invite: []id.UserID{invitee.UserID},
		InitialState: []*event.Event{{
			Type: event.StateEncryption, StateKey: ptr(""),
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if _, err := invitee.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{via}}); err != nil {
		t.Fatalf("%s joining %s via %s: %v", invitee.UserID, room, via, err)
	}
	for _, c := range []*mautrix.Client{creator, invitee} {
		var enc event.EncryptionEventContent
		if err := c.StateEvent(ctx, room, event.StateEncryption, "", &enc); err != nil || enc.Algorithm != id.AlgorithmMegolmV1 {
			t.Fatalf("%s's server's encryption state of %s: %+v, %v", c.UserID, room, enc, err)
		}
	}
	return room
}

// awaitDevice polls the /keys/query of c's server until it shows user's
// device with its identity keys (a remote user's, fetched from their server).
func awaitDevice(t *testing.T, c *mautrix.Client, user id.UserID, device id.DeviceID) {
	t.Helper()
	deadline := time.Now().Add(fedWait)
	for {
		q, err := c.QueryKeys(context.Background(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{user: {}}})
		if err != nil {
			t.Fatalf("%s's /keys/query for %s: %v", c.UserID, user, err)
		}
		if keys, ok := q.DeviceKeys[user][device]; ok && keys.Keys[id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, device)] != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's /keys/query never showed %s's device %s with keys: %+v (failures %v)", c.UserID, user, device, q.DeviceKeys, q.Failures)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// exchangeEncrypted: from shares a Megolm session with to's devices (keys
// queried and one-time keys claimed from to's server) and sends body; each
// of to's devices decrypts it from its own /sync.
func exchangeEncrypted(t *testing.T, room id.RoomID, from *e2eeDevice, body string, to ...*e2eeDevice) {
	t.Helper()
	// Each user once: mautrix forgets the Olm sessions it found for a user
	// named twice.
	users := []id.UserID{from.client.UserID}
	for _, d := range to {
		if !slices.Contains(users, d.client.UserID) {
			users = append(users, d.client.UserID)
		}
		awaitDevice(t, from.client, d.client.UserID, d.client.DeviceID)
	}
	if err := from.mach.ShareGroupSession(context.Background(), room, users); err != nil {
		t.Fatalf("%s sharing a group session: %v", from.client.UserID, err)
	}
	evID := from.sendEncrypted(t, room, body)
	for _, d := range to {
		if got := d.awaitDecrypted(t, room, evID); got != body {
			t.Fatalf("%s/%s decrypted %q, want %q", d.client.UserID, d.client.DeviceID, got, body)
		}
	}
}

// TestFederationE2EE: alice@a.test and bob@b.test, two Myelin servers over
// loopback. An encrypted room; Megolm messages both ways, each decrypted
// from the recipient's own /sync; bob's new device is seen by a.test
// (alice's /sync device_lists.changed, /keys/query) and decrypts alice's
// next message; both bootstrap cross-signing, alice signs bob's master key,
// and bob's keys as a.test serves them carry that signature and bob's
// device's self-signing one (alice trusts bob's device).
func TestFederationE2EE(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			aliceClient, bobClient := a.Register(t, "alice"), b.Register(t, "bob")
			room := e2eeRoom{id: createEncryptedRoom(t, aliceClient, bobClient, "a.test")}
			alice := newE2EEDevice(t, aliceClient, room)
			bob := newE2EEDevice(t, bobClient, room)
			ctx := context.Background()

			// 1. Both directions.
			exchangeEncrypted(t, room.id, alice, "hello bob, from a.test", bob)
			exchangeEncrypted(t, room.id, bob, "hello alice, from b.test", alice)

			// 2. Bob's second device on b.test: a.test learns of it.
			bob2 := newE2EEDevice(t, login(t, b, "bob"), room)
			if !alice.syncUntil(t, func(r *mautrix.RespSync) bool {
				return containsUser(userStrings(r.DeviceLists.Changed), bob.client.UserID)
			}) {
				t.Fatalf("alice's /sync device_lists.changed never named bob after his new device %s", bob2.client.DeviceID)
			}
			awaitDevice(t, alice.client, bob.client.UserID, bob2.client.DeviceID)
			alice.mach.OnDevicesChanged(ctx, bob.client.UserID)
			devices, err := alice.mach.FetchKeys(ctx, []id.UserID{bob.client.UserID}, true)
			if err != nil || devices[bob.client.UserID][bob2.client.DeviceID] == nil {
				t.Fatalf("alice's crypto fetching bob's devices: %v, %v; want %s", devices, err, bob2.client.DeviceID)
			}
			// A new device means a new Megolm session for the room.
			if err := alice.mach.CryptoStore.RemoveOutboundGroupSession(ctx, room.id); err != nil {
				t.Fatal(err)
			}
			exchangeEncrypted(t, room.id, alice, "hello both of bob's devices", bob, bob2)

			// 3. Cross-signing across servers.
			noUIA := func(*mautrix.RespUserInteractive) any { return nil }
			csKeys := map[*e2eeDevice]*crypto.CrossSigningKeysCache{}
			for _, d := range []*e2eeDevice{alice, bob} {
				keys, err := d.mach.GenerateCrossSigningKeys()
				if err != nil {
					t.Fatal(err)
				}
				if err := d.mach.PublishCrossSigningKeys(ctx, keys, noUIA); err != nil {
					t.Fatalf("%s publishing cross-signing keys: %v", d.client.UserID, err)
				}
				if err := d.mach.SignOwnDevice(ctx, d.mach.OwnIdentity()); err != nil {
					t.Fatalf("%s signing own device: %v", d.client.UserID, err)
				}
				csKeys[d] = keys
			}
			bobMaster := csKeys[bob].MasterKey.PublicKey()
			// a.test serves bob's master key (from b.test).
			deadline := time.Now().Add(fedWait)
			for {
				if _, err := alice.mach.FetchKeys(ctx, []id.UserID{bob.client.UserID}, true); err != nil {
					t.Fatal(err)
				}
				seen, err := alice.mach.GetCrossSigningPublicKeys(ctx, bob.client.UserID)
				if err == nil && seen != nil && seen.MasterKey == bobMaster {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("alice never saw bob's master key %s: %+v, %v", bobMaster, seen, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err := alice.mach.SignUser(ctx, bob.client.UserID, bobMaster); err != nil {
				t.Fatalf("alice signing bob's master key: %v", err)
			}
			q, err := alice.client.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.client.UserID: {}}})
			if err != nil {
				t.Fatal(err)
			}
			aliceUSK := id.NewKeyID(id.KeyAlgorithmEd25519, csKeys[alice].UserSigningKey.PublicKey().String())
			if sig := q.MasterKeys[bob.client.UserID].Signatures[alice.client.UserID][aliceUSK]; sig == "" {
				t.Fatalf("bob's master key as a.test serves it lacks alice's signature: %+v", q.MasterKeys[bob.client.UserID])
			}
			// Alice trusts bob, and through his self-signing key his device
			// (its signature came to a.test with his device list).
			deadline = time.Now().Add(fedWait)
			for {
				if _, err := alice.mach.FetchKeys(ctx, []id.UserID{bob.client.UserID}, true); err != nil {
					t.Fatal(err)
				}
				trusted, err := alice.mach.IsUserTrusted(ctx, bob.client.UserID)
				if err != nil {
					t.Fatal(err)
				}
				dev, _ := alice.mach.GetOrFetchDevice(ctx, bob.client.UserID, bob.client.DeviceID)
				if trusted && dev != nil && alice.mach.IsDeviceTrusted(ctx, dev) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("alice trusts bob = %v, bob's device %s = %+v not cross-signed trusted", trusted, bob.client.DeviceID, dev)
				}
				time.Sleep(200 * time.Millisecond)
			}
			// b.test does not show bob alice's signature of his key: it is hers.
			q, err = bob.client.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.client.UserID: {}}})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := q.MasterKeys[bob.client.UserID].Signatures[alice.client.UserID]; ok {
				t.Fatal("bob sees alice's user-signing signature on his master key")
			}
		})
	}
}

func userStrings(users []id.UserID) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.String()
	}
	return out
}

// TestFederationE2EEDendrite: the encrypted exchange with Dendrite 0.13.8 as
// the other server (see dendrite_helpers_test.go): alice on Myelin, dave on
// Dendrite, an encrypted room hosted on each side; Olm sessions from one-time
// keys claimed across the two servers, room keys over to-device across them,
// Megolm messages decrypted both ways.
func TestFederationE2EEDendrite(t *testing.T) {
	dendriteBinary(t) // skip (or fail in CI) before starting anything
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			d := startDendrite(t)
			m := startMyelinForDendrite(t, backend, d)
			aliceClient, daveClient := m.Register(t, "alice"), d.Register(t, "dave")
			var alice, dave *e2eeDevice
			for _, host := range []string{"myelin", "dendrite"} {
				creator, guest, via := aliceClient, daveClient, m.Config.ServerName
				if host == "dendrite" {
					creator, guest, via = daveClient, aliceClient, d.ServerName
				}
				room := e2eeRoom{id: createEncryptedRoom(t, creator, guest, via)}
				if alice == nil {
					// One device each (the state store says every room is encrypted).
					alice, dave = newE2EEDevice(t, aliceClient, room), newE2EEDevice(t, daveClient, room)
				}
				exchangeEncrypted(t, room.id, alice, "hello dave, from myelin, in a "+host+"-hosted room", dave)
				exchangeEncrypted(t, room.id, dave, "hello alice, from dendrite, in a "+host+"-hosted room", alice)
			}
		})
	}
}
