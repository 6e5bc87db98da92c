package ingest_test

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/ingest"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/notifier"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// benchWorld is newWorld for a benchmark: a local room on a real roomserver
// (the store on disk), with @r:remote.test joined.
func benchWorld(b *testing.B, backend string) *world {
	ctx := context.Background()
	db, err := storage.Open(ctx, pgtest.StoreURL(b, backend), 4)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	keys := keyOf{"remote.test": mfed.GenerateSigningKey()}
	cfg := config.Default()
	cfg.ServerName = "test.local"
	rs, err := roomserver.New(ctx, roomserver.Options{Store: db, Stream: db.Stream, Config: cfg, SigningKey: mfed.GenerateSigningKey(),
		Notifier: notifier.New(db.Stream.Current()), Keys: keys})
	if err != nil {
		b.Fatal(err)
	}
	// As in production, each transaction is recorded in the audit trail.
	trail, err := audit.New(audit.Options{Store: db})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(trail.Close)
	eng, err := ingest.New(ingest.Options{Rooms: rs, Store: db, Remote: &fakeRemote{}, Keys: keys, Audit: trail})
	if err != nil {
		b.Fatal(err)
	}
	w := &world{db: db, rs: rs, eng: eng, keys: keys, owner: "@owner:test.local"}
	if w.room, err = rs.CreateRoom(ctx, w.owner, &roomserver.CreateRoomRequest{Preset: "public_chat"}); err != nil {
		b.Fatal(err)
	}
	prevs, depth := benchHead(b, w)
	j, jID := benchEvent(b, w, "m.room.member", sk(string(ruser)), `{"membership":"join"}`, prevs, depth)
	if res, err := eng.Transaction(ctx, "remote.test", "join", txnBody(j)); err != nil || res[string(jID)] != "" {
		b.Fatalf("join: %v %v", res, err)
	}
	return w
}

func benchHead(b *testing.B, w *world) ([]id.EventID, int64) {
	row, err := w.db.GetRoom(context.Background(), string(w.room))
	if err != nil {
		b.Fatal(err)
	}
	var out []id.EventID
	for _, x := range row.Extremities {
		out = append(out, id.EventID(x))
	}
	return out, row.MaxDepth + 1
}

// benchEvent is an event of @r:remote.test signed by remote.test, with its
// auth events from the current state.
func benchEvent(b *testing.B, w *world, evType string, stateKey *string, content string, prevs []id.EventID, depth int64) (json.RawMessage, id.EventID) {
	ctx := context.Background()
	row, err := w.db.GetRoom(ctx, string(w.room))
	if err != nil {
		b.Fatal(err)
	}
	version := id.RoomVersion(row.RoomVersion)
	p := &pdu.PDU{Type: evType, StateKey: stateKey, Sender: ruser, Content: []byte(content), RoomID: w.room, PrevEvents: prevs,
		Depth: depth, OriginServerTS: time.Now().UnixMilli()}
	for _, k := range p.AuthEventSelection(version) {
		if se, err := w.db.CurrentStateEvent(ctx, string(w.room), k.Type, k.StateKey); err == nil {
			p.AuthEvents = append(p.AuthEvents, id.EventID(se.EventID))
		}
	}
	key := w.keys["remote.test"]
	if err := p.Sign(version, "remote.test", key.ID, key.Priv); err != nil {
		b.Fatal(err)
	}
	evID, err := p.GetEventID(version)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := jsonv2.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	return raw, evID
}

// BenchmarkTransaction is Engine.Transaction without HTTP: one op is a
// transaction of 50 messages of @r:remote.test, each the child of the
// previous, into one room (the in-process half of
// tests.BenchmarkFederationInbound, to separate ingest from transport cost).
func BenchmarkTransaction(b *testing.B) {
	for _, backend := range pgtest.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			w := benchWorld(b, backend)
			prevs, depth := benchHead(b, w)
			txn := 0
			b.Run("txn50", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					var pdus []json.RawMessage
					for range ingest.MaxPDUs {
						raw, evID := benchEvent(b, w, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, depth), prevs, depth)
						pdus = append(pdus, raw)
						prevs, depth = []id.EventID{evID}, depth+1
					}
					txn++
					body := txnBody(pdus...)
					b.StartTimer()
					res, err := w.eng.Transaction(ctx, "remote.test", fmt.Sprint("bench", txn), body)
					if err != nil {
						b.Fatal(err)
					}
					for evID, r := range res {
						if r != "" {
							b.Fatalf("%s refused: %s", evID, r)
						}
					}
					if len(res) != len(pdus) {
						b.Fatalf("%d results for %d PDUs", len(res), len(pdus))
					}
				}
				b.StopTimer()
				// Accepted, not soft-failed: the chain's last event is the room's only head.
				if head, _ := benchHead(b, w); len(head) != 1 || head[0] != prevs[0] {
					b.Fatalf("room head %v, want %s", head, prevs[0])
				}
				b.ReportMetric(float64(ingest.MaxPDUs*b.N)/b.Elapsed().Seconds(), "PDUs/s")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/txn")
			})
		})
	}
}
