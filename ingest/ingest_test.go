package ingest_test

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/federationapi"
	"github.com/myelin-chat/myelin/ingest"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/notifier"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type keyOf map[string]*mfed.SigningKey

func (k keyOf) GetKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if key, ok := k[server]; ok && key.ID == keyID {
		return key.Pub, time.Now().Add(time.Hour), nil
	}
	return "", time.Time{}, fmt.Errorf("unknown key %s %s", server, keyID)
}

// fakeRemote serves /get_missing_events from a fixed list.
type fakeRemote struct {
	events []json.RawMessage
	calls  int
	// failEmpty: with no events to serve, fail (as a 404) rather than
	// answer an empty list.
	failEmpty bool
}

func (f *fakeRemote) GetMissingEvents(_ context.Context, server string, _ id.RoomID, earliest, latest []id.EventID, limit int) ([]json.RawMessage, error) {
	f.calls++
	if limit > 10 || len(earliest) == 0 || len(latest) == 0 {
		return nil, fmt.Errorf("bad request: limit %d earliest %v latest %v", limit, earliest, latest)
	}
	if f.failEmpty && len(f.events) == 0 {
		return nil, fmt.Errorf("HTTP 404")
	}
	return f.events, nil
}

// world is a local room on a real roomserver that remote.test has joined.
type world struct {
	db     *storage.DB
	rs     *roomserver.Server
	eng    *ingest.Engine
	remote *fakeRemote
	keys   keyOf
	room   id.RoomID
	owner  id.UserID
}

func openStore(t *testing.T, backend string) *storage.DB {
	ctx := context.Background()
	url := pgtest.StoreURL(t, backend)
	db, err := storage.Open(ctx, url, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

func newWorld(t *testing.T, backend string) *world {
	ctx := context.Background()
	db := openStore(t, backend)
	keys := keyOf{"remote.test": mfed.GenerateSigningKey(), "other.test": mfed.GenerateSigningKey()}
	cfg := config.Default()
	cfg.ServerName = "test.local"
	rs, err := roomserver.New(ctx, roomserver.Options{Store: db, Stream: db.Stream, Config: cfg, SigningKey: mfed.GenerateSigningKey(),
		Notifier: notifier.New(db.Stream.Current()), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	remote := &fakeRemote{}
	eng, err := ingest.New(ingest.Options{Rooms: rs, Store: db, Remote: remote, Keys: keys, ServerACL: federationapi.ACLAllows})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{db: db, rs: rs, eng: eng, remote: remote, keys: keys, owner: "@owner:test.local"}
	if w.room, err = rs.CreateRoom(ctx, w.owner, &roomserver.CreateRoomRequest{Preset: "public_chat"}); err != nil {
		t.Fatal(err)
	}
	return w
}

// head is the room's forward extremities and the depth above them.
func (w *world) head(t *testing.T) ([]id.EventID, int64) {
	row, err := w.db.GetRoom(context.Background(), string(w.room))
	if err != nil {
		t.Fatal(err)
	}
	evs, err := w.db.GetEvents(context.Background(), row.Extremities)
	if err != nil {
		t.Fatal(err)
	}
	var out []id.EventID
	depth := int64(0)
	for _, x := range row.Extremities {
		out = append(out, id.EventID(x))
		depth = max(depth, evs[x].Depth)
	}
	return out, depth + 1
}

// event builds an event signed by server's key (the sender's server unless
// signer says otherwise), with auth events from the current state.
func (w *world) event(t *testing.T, signer string, sender id.UserID, evType string, stateKey *string, content any, prevs []id.EventID, depth int64, authExtra ...id.EventID) *pdu.PDU {
	t.Helper()
	ctx := context.Background()
	raw, _ := json.Marshal(content)
	p := &pdu.PDU{Type: evType, StateKey: stateKey, Sender: sender, Content: raw, RoomID: w.room, PrevEvents: prevs,
		Depth: depth, OriginServerTS: time.Now().UnixMilli()}
	version := id.RoomVersion(w.version(t))
	for _, k := range p.AuthEventSelection(version) {
		if se, err := w.db.CurrentStateEvent(ctx, string(w.room), k.Type, k.StateKey); err == nil {
			p.AuthEvents = append(p.AuthEvents, id.EventID(se.EventID))
		}
	}
	p.AuthEvents = append(p.AuthEvents, authExtra...)
	key := w.keys[signer]
	if err := p.Sign(version, signer, key.ID, key.Priv); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *world) version(t *testing.T) string {
	row, err := w.db.GetRoom(context.Background(), string(w.room))
	if err != nil {
		t.Fatal(err)
	}
	return row.RoomVersion
}

func (w *world) eventID(t *testing.T, p *pdu.PDU) id.EventID {
	x, err := p.GetEventID(id.RoomVersion(w.version(t)))
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func raw(t *testing.T, p *pdu.PDU) json.RawMessage {
	b, err := jsonv2.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func txnBody(pdus ...json.RawMessage) []byte {
	b, _ := json.Marshal(map[string]any{"origin": "remote.test", "origin_server_ts": 1, "pdus": pdus, "edus": []any{}})
	return b
}

func sk(s string) *string { return &s }

const ruser = id.UserID("@r:remote.test")

// join has remote.test's user join through a transaction.
func (w *world) join(t *testing.T) {
	prevs, depth := w.head(t)
	j := w.event(t, "remote.test", ruser, "m.room.member", sk(string(ruser)), map[string]string{"membership": "join"}, prevs, depth)
	res, err := w.eng.Transaction(context.Background(), "remote.test", "join", txnBody(raw(t, j)))
	if err != nil || res[string(w.eventID(t, j))] != "" || len(res) != 1 {
		t.Fatalf("join: %v %v", res, err)
	}
}

func (w *world) message(t *testing.T, body string) *pdu.PDU {
	prevs, depth := w.head(t)
	return w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": body}, prevs, depth)
}

func (w *world) stored(t *testing.T, x id.EventID) *storage.Event {
	got, err := w.db.GetEvents(context.Background(), []string{string(x)})
	if err != nil {
		t.Fatal(err)
	}
	return got[string(x)]
}

// TestTransaction drives Transaction against a real roomserver on both backends.
func TestTransaction(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, backend)
			w.join(t)

			t.Run("valid message accepted", func(t *testing.T) {
				m := w.message(t, "hello")
				res, err := w.eng.Transaction(ctx, "remote.test", "t1", txnBody(raw(t, m)))
				if err != nil || res[string(w.eventID(t, m))] != "" {
					t.Fatalf("results %v, %v", res, err)
				}
				se := w.stored(t, w.eventID(t, m))
				if se == nil || se.SoftFailed || gjson.GetBytes(se.JSON, "content.body").Str != "hello" {
					t.Fatalf("stored: %+v", se)
				}
				// A repeated transaction ID is answered from the store, its new body ignored.
				m2 := w.message(t, "again")
				res2, err := w.eng.Transaction(ctx, "remote.test", "t1", txnBody(raw(t, m2)))
				if err != nil || len(res2) != 1 || res2[string(w.eventID(t, m))] != "" {
					t.Fatalf("repeat: %v, %v", res2, err)
				}
				if w.stored(t, w.eventID(t, m2)) != nil {
					t.Fatal("repeated transaction was processed again")
				}
			})

			t.Run("bad hash redacted", func(t *testing.T) {
				m := w.message(t, "secret")
				m.Content = json.RawMessage(`{"msgtype":"m.text","body":"tampered"}`)
				evID := w.eventID(t, m) // the reference hash covers the redacted form: unchanged
				res, err := w.eng.Transaction(ctx, "remote.test", "t2", txnBody(raw(t, m)))
				if err != nil || res[string(evID)] != "" {
					t.Fatalf("results %v, %v", res, err)
				}
				se := w.stored(t, evID)
				if se == nil || gjson.GetBytes(se.JSON, "content.body").Exists() {
					t.Fatalf("tampered event not redacted: %+v", se)
				}
			})

			t.Run("forged sender rejected", func(t *testing.T) {
				prevs, depth := w.head(t)
				// remote.test signs an event claiming a local sender.
				f := w.event(t, "remote.test", w.owner, "m.room.message", nil, map[string]string{"body": "forged"}, prevs, depth)
				// other.test relays remote.test's event.
				m := w.message(t, "relayed")
				res, err := w.eng.Transaction(ctx, "remote.test", "t3", txnBody(raw(t, f)))
				if err != nil || res[string(w.eventID(t, f))] == "" || w.stored(t, w.eventID(t, f)) != nil {
					t.Fatalf("forged sender: %v, %v", res, err)
				}
				// A relay of remote.test's signed event (as a resident passes
				// on joins taken through send_join) is accepted.
				res, err = w.eng.Transaction(ctx, "other.test", "t3", txnBody(raw(t, m)))
				if err != nil || res[string(w.eventID(t, m))] != "" || w.stored(t, w.eventID(t, m)) == nil {
					t.Fatalf("relayed event: %v, %v", res, err)
				}
			})

			t.Run("server not in room rejected", func(t *testing.T) {
				prevs, depth := w.head(t)
				o := w.event(t, "other.test", "@o:other.test", "m.room.message", nil, map[string]string{"body": "hi"}, prevs, depth)
				res, err := w.eng.Transaction(ctx, "other.test", "t4", txnBody(raw(t, o)))
				if err != nil || res[string(w.eventID(t, o))] == "" || w.stored(t, w.eventID(t, o)) != nil {
					t.Fatalf("outsider: %v, %v", res, err)
				}
			})

			t.Run("51 PDUs refused", func(t *testing.T) {
				var pdus []json.RawMessage
				for range 51 {
					pdus = append(pdus, raw(t, w.message(t, "x")))
				}
				_, err := w.eng.Transaction(ctx, "remote.test", "t5", txnBody(pdus...))
				var me *mxhttp.Error
				if !errors.As(err, &me) || me.Code != "M_TOO_LARGE" {
					t.Fatalf("51 PDUs: %v", err)
				}
			})

			t.Run("missing prev filled", func(t *testing.T) {
				prevs, depth := w.head(t)
				a := w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"body": "a"}, prevs, depth)
				b := w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"body": "b"}, []id.EventID{w.eventID(t, a)}, depth+1)
				w.remote.events, w.remote.calls = []json.RawMessage{raw(t, a)}, 0
				res, err := w.eng.Transaction(ctx, "remote.test", "t6", txnBody(raw(t, b)))
				if err != nil || res[string(w.eventID(t, b))] != "" || w.remote.calls != 1 {
					t.Fatalf("results %v, %v (calls %d)", res, err, w.remote.calls)
				}
				if w.stored(t, w.eventID(t, a)) == nil || w.stored(t, w.eventID(t, b)) == nil {
					t.Fatal("gap not filled")
				}
				// A gap the remote cannot fill is the PDU's error.
				c := w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"body": "c"}, []id.EventID{"$nowhere"}, depth+2)
				w.remote.events = nil
				res, err = w.eng.Transaction(ctx, "remote.test", "t7", txnBody(raw(t, c)))
				if err != nil || !strings.Contains(res[string(w.eventID(t, c))], "prev events unknown") {
					t.Fatalf("unfillable gap: %v, %v", res, err)
				}
			})

			t.Run("unknown auth events rejected", func(t *testing.T) {
				prevs, depth := w.head(t)
				m := w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"body": "x"}, prevs, depth, "$unknown1", "$unknown2")
				res, err := w.eng.Transaction(ctx, "remote.test", "t8", txnBody(raw(t, m)))
				if err != nil || res[string(w.eventID(t, m))] == "" || w.stored(t, w.eventID(t, m)) != nil {
					t.Fatalf("unknown auth events: %v, %v", res, err)
				}
			})

			t.Run("soft-failed stored as such", func(t *testing.T) {
				// Built before the ban (allowed by the state before it), sent after it.
				m := w.message(t, "from a banned user")
				if err := w.rs.ChangeMembership(ctx, roomserver.MembershipAction{Sender: w.owner, RoomID: w.room, Target: ruser, Action: "ban"}); err != nil {
					t.Fatal(err)
				}
				res, err := w.eng.Transaction(ctx, "remote.test", "t10", txnBody(raw(t, m)))
				if err != nil || res[string(w.eventID(t, m))] != "" {
					t.Fatalf("results %v, %v", res, err)
				}
				if se := w.stored(t, w.eventID(t, m)); se == nil || !se.SoftFailed {
					t.Fatalf("not soft-failed: %+v", se)
				}
			})

			t.Run("unknown room", func(t *testing.T) {
				m := w.message(t, "x")
				m.RoomID = "!nowhere:remote.test"
				key := w.keys["remote.test"]
				m.Signatures = nil
				if err := m.Sign(id.RoomVersion(w.version(t)), "remote.test", key.ID, key.Priv); err != nil {
					t.Fatal(err)
				}
				res, err := w.eng.Transaction(ctx, "remote.test", "t9", txnBody(raw(t, m)))
				if err != nil || res[string(w.eventID(t, m))] != "room not found" {
					t.Fatalf("unknown room: %v, %v", res, err)
				}
				if _, err := w.db.GetRoom(ctx, "!nowhere:remote.test"); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("unknown room stored: %v", err)
				}
			})

			t.Run("origin denied by the server ACL", func(t *testing.T) {
				if _, err := w.rs.Send(ctx, roomserver.SendRequest{Sender: w.owner, RoomID: w.room, Type: "m.room.server_acl",
					StateKey: sk(""), Content: json.RawMessage(`{"allow":["*"],"deny":["remote.test"]}`)}); err != nil {
					t.Fatal(err)
				}
				m := w.message(t, "denied")
				res, err := w.eng.Transaction(ctx, "remote.test", "t-acl", txnBody(raw(t, m)))
				if err != nil || !strings.Contains(res[string(w.eventID(t, m))], "server ACL") {
					t.Fatalf("denied origin: %v, %v", res, err)
				}
				if w.stored(t, w.eventID(t, m)) != nil {
					t.Fatal("an event from a denied origin was stored")
				}
			})
		})
	}
}
