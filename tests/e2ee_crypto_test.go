//go:build goolm

package tests

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// e2eeRoom is the crypto StateStore for one encrypted room. The Megolm event
// travels from encrypter to decrypter in the test (the room timeline is the
// rooms tests' business); every key and to-device message goes through the server.
type e2eeRoom struct{ id id.RoomID }

func (r e2eeRoom) IsEncrypted(context.Context, id.RoomID) (bool, error) { return true, nil }
func (r e2eeRoom) GetEncryptionEvent(context.Context, id.RoomID) (*event.EncryptionEventContent, error) {
	return &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}, nil
}
func (r e2eeRoom) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}, nil
}
func (r e2eeRoom) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) {
	return []id.RoomID{r.id}, nil
}

type e2eeDevice struct {
	client *mautrix.Client
	mach   *crypto.OlmMachine
	since  string // the /sync token: to-device messages before it are acknowledged
}

func newE2EEDevice(t *testing.T, client *mautrix.Client, room e2eeRoom) *e2eeDevice {
	t.Helper()
	ctx := context.Background()
	mach := crypto.NewOlmMachine(client, nil, crypto.NewMemoryStore(nil), room)
	if err := mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("uploading keys of %s: %v", client.DeviceID, err)
	}
	t.Cleanup(mach.Destroy)
	return &e2eeDevice{client: client, mach: mach}
}

// receiveToDevice runs one /sync for the device and hands its to-device
// messages to the crypto machine; the next call's since token acknowledges them.
func (d *e2eeDevice) receiveToDevice(t *testing.T, _ *testserver.Server) int {
	t.Helper()
	return len(d.syncOnce(t, 0).ToDevice.Events)
}

// syncOnce runs one /sync for the device (long-polling up to timeoutMS),
// hands its to-device messages to the crypto machine and advances since.
func (d *e2eeDevice) syncOnce(t *testing.T, timeoutMS int) *mautrix.RespSync {
	t.Helper()
	ctx := context.Background()
	resp, err := d.client.SyncRequest(ctx, timeoutMS, d.since, `{"room":{"timeline":{"limit":50}}}`, false, "")
	if err != nil {
		t.Fatalf("sync as %s/%s: %v", d.client.UserID, d.client.DeviceID, err)
	}
	for _, evt := range resp.ToDevice.Events {
		evt.Type.Class = event.ToDeviceEventType
		evt.ToUserID, evt.ToDeviceID = d.client.UserID, d.client.DeviceID
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			t.Fatalf("parsing to-device %s: %v", evt.Type.Type, err)
		}
		d.mach.HandleToDeviceEvent(ctx, evt)
	}
	d.since = resp.NextBatch
	return resp
}

func (d *e2eeDevice) decrypt(t *testing.T, room id.RoomID, sender id.UserID, enc *event.EncryptedEventContent, eventID string) string {
	t.Helper()
	evt := &event.Event{
		ID: id.EventID(eventID), RoomID: room, Sender: sender, Type: event.EventEncrypted,
		Timestamp: time.Now().UnixMilli(), Content: event.Content{Parsed: enc},
	}
	body, err := d.decryptEvent(evt)
	if err != nil {
		t.Fatalf("%s/%s cannot decrypt %s: %v", d.client.UserID, d.client.DeviceID, eventID, err)
	}
	return body
}

// decryptEvent decrypts a Megolm event (content parsed) to its message body.
func (d *e2eeDevice) decryptEvent(evt *event.Event) (string, error) {
	dec, err := d.mach.DecryptMegolmEvent(context.Background(), evt)
	if err != nil {
		return "", err
	}
	return dec.Content.AsMessage().Body, nil
}

func encryptText(t *testing.T, d *e2eeDevice, room id.RoomID, body string) *event.EncryptedEventContent {
	t.Helper()
	enc, err := d.mach.EncryptMegolmEvent(context.Background(), room, event.EventMessage,
		&event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

func login(t *testing.T, srv *testserver.Server, localpart string) *mautrix.Client {
	t.Helper()
	c := srv.Client(t)
	_, err := c.Login(context.Background(), &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         "password-" + localpart,
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("logging in %s: %v", localpart, err)
	}
	return c
}

// TestE2EEWithMautrixCrypto runs the E2EE exchange with mautrix-go's crypto
// (pure-Go Olm): Olm sessions from claimed one-time keys, a Megolm room key
// shared over to-device, a second device of the recipient, cross-signing with
// a verified user, and a key backup restored by a fresh device.
func TestE2EEWithMautrixCrypto(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		aliceClient, bobClient := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := e2eeRoom{id: shareRoom(t, aliceClient, bobClient)}
		alice := newE2EEDevice(t, aliceClient, room)
		bob := newE2EEDevice(t, bobClient, room)
		users := []id.UserID{alice.client.UserID, bob.client.UserID}

		// 1. Alice shares a Megolm session with Bob over Olm; Bob decrypts.
		if err := alice.mach.ShareGroupSession(ctx, room.id, users); err != nil {
			t.Fatalf("sharing group session: %v", err)
		}
		first := encryptText(t, alice, room.id, "hello bob")
		if n := bob.receiveToDevice(t, srv); n == 0 {
			t.Fatal("bob got no to-device messages")
		}
		if got := bob.decrypt(t, room.id, alice.client.UserID, first, "$first"); got != "hello bob" {
			t.Fatalf("bob decrypted %q", got)
		}

		// 2. Bob logs in a second device; Alice's next message decrypts on both.
		bob2 := newE2EEDevice(t, login(t, srv, "bob"), room)
		changed, _, err := srv.Keys.DeviceListChanges(ctx, alice.client.UserID.String(), 0, srv.DB.Stream.Current())
		if err != nil || !containsUser(changed, bob.client.UserID) {
			t.Fatalf("alice's device-list changes = %v, %v; want bob", changed, err)
		}
		alice.mach.OnDevicesChanged(ctx, bob.client.UserID)
		if _, err := alice.mach.FetchKeys(ctx, []id.UserID{bob.client.UserID}, true); err != nil {
			t.Fatal(err)
		}
		// A new device means a new Megolm session for the room.
		if err := alice.mach.CryptoStore.RemoveOutboundGroupSession(ctx, room.id); err != nil {
			t.Fatal(err)
		}
		if err := alice.mach.ShareGroupSession(ctx, room.id, users); err != nil {
			t.Fatalf("re-sharing group session: %v", err)
		}
		second := encryptText(t, alice, room.id, "hello both")
		bob.receiveToDevice(t, srv)
		bob2.receiveToDevice(t, srv)
		for _, d := range []*e2eeDevice{bob, bob2} {
			if got := d.decrypt(t, room.id, alice.client.UserID, second, "$second"); got != "hello both" {
				t.Fatalf("%s decrypted %q", d.client.DeviceID, got)
			}
		}

		// 3. Cross-signing: both publish keys; replacing them needs the password; Bob verifies Alice.
		noUIA := func(*mautrix.RespUserInteractive) any { return nil }
		for _, d := range []*e2eeDevice{alice, bob} {
			keys, err := d.mach.GenerateCrossSigningKeys()
			if err != nil {
				t.Fatal(err)
			}
			if err := d.mach.PublishCrossSigningKeys(ctx, keys, noUIA); err != nil {
				t.Fatalf("first cross-signing upload (no UIA expected): %v", err)
			}
			if err := d.mach.SignOwnDevice(ctx, d.mach.OwnIdentity()); err != nil {
				t.Fatalf("signing own device: %v", err)
			}
		}
		newKeys, _ := alice.mach.GenerateCrossSigningKeys()
		if err := alice.mach.PublishCrossSigningKeys(ctx, newKeys, noUIA); err == nil {
			t.Fatal("replacing the master key without auth succeeded")
		}
		withPassword := func(r *mautrix.RespUserInteractive) any {
			return map[string]any{"type": "m.login.password", "session": r.Session, "password": "password-alice",
				"identifier": map[string]string{"type": "m.id.user", "user": "alice"}}
		}
		if err := alice.mach.PublishCrossSigningKeys(ctx, newKeys, withPassword); err != nil {
			t.Fatalf("replacing the master key with the password: %v", err)
		}
		if err := alice.mach.SignOwnDevice(ctx, alice.mach.OwnIdentity()); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.mach.FetchKeys(ctx, []id.UserID{alice.client.UserID}, true); err != nil {
			t.Fatal(err)
		}
		aliceKeys, err := bob.mach.GetCrossSigningPublicKeys(ctx, alice.client.UserID)
		if err != nil || aliceKeys == nil || aliceKeys.MasterKey != newKeys.MasterKey.PublicKey() {
			t.Fatalf("bob sees alice's master key %+v, %v; want %s", aliceKeys, err, newKeys.MasterKey.PublicKey())
		}
		if err := bob.mach.SignUser(ctx, alice.client.UserID, aliceKeys.MasterKey); err != nil {
			t.Fatalf("bob signing alice: %v", err)
		}
		if _, err := bob.mach.FetchKeys(ctx, []id.UserID{alice.client.UserID}, true); err != nil {
			t.Fatal(err)
		}
		if trusted, err := bob.mach.IsUserTrusted(ctx, alice.client.UserID); err != nil || !trusted {
			t.Fatalf("bob trusts alice = %v, %v", trusted, err)
		}
		if !bob.mach.IsDeviceTrusted(ctx, alice.mach.OwnIdentity()) {
			t.Fatal("alice's device is not cross-signed trusted for bob")
		}
		// Bob's signature on Alice's master key is Bob's business: Alice's query does not show it.
		q, err := alice.client.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.client.UserID: {}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.MasterKeys[alice.client.UserID].Signatures[bob.client.UserID]; ok {
			t.Fatal("alice sees bob's user-signing signature on her master key")
		}

		// 4. Key backup: Alice backs up the first session; a fresh device restores and decrypts history.
		backupKey, err := backup.NewMegolmBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		ver, err := alice.client.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
			AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))},
		})
		if err != nil {
			t.Fatal(err)
		}
		igs, err := alice.mach.CryptoStore.GetGroupSession(ctx, room.id, first.SessionID)
		if err != nil || igs == nil {
			t.Fatalf("alice's inbound session for the first message: %v, %v", igs, err)
		}
		exported, err := igs.Internal.Export(igs.Internal.FirstKnownIndex())
		if err != nil {
			t.Fatal(err)
		}
		enc, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
			Algorithm: id.AlgorithmMegolmV1, SenderKey: igs.SenderKey, SessionKey: string(exported),
			SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: igs.SigningKey},
		})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(enc)
		if _, err := alice.client.PutKeysInBackup(ctx, ver.Version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
			room.id: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{first.SessionID: {
				FirstMessageIndex: int(igs.Internal.FirstKnownIndex()), IsVerified: true, SessionData: data,
			}}},
		}}); err != nil {
			t.Fatal(err)
		}
		alice2 := newE2EEDevice(t, login(t, srv, "alice"), room)
		if v, err := alice2.mach.DownloadAndStoreLatestKeyBackup(ctx, backupKey); err != nil || v != ver.Version {
			t.Fatalf("restoring backup: version %q, %v", v, err)
		}
		if got := alice2.decrypt(t, room.id, alice.client.UserID, first, "$first"); got != "hello bob" {
			t.Fatalf("restored device decrypted %q", got)
		}
	})
}

func containsUser(list []string, u id.UserID) bool {
	for _, v := range list {
		if v == u.String() {
			return true
		}
	}
	return false
}
