package tests

import (
	"context"
	jsonv2 "encoding/json/v2"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestMessagesFromSyncTokenStopsAtItsStream: a remote event forked from
// before alice's messages 1–4 arrives after them (Complement's
// TestNetworkPartitionOrdering). The /sync that shows it, limit 4, holds it
// and 5–7; /messages backwards from that sync's prev_batch (a stream token)
// gives 4, 3, 2, 1 — not the forked event, which sorts among them by depth
// but came later in the stream and was in that /sync already.
func TestMessagesFromSyncTokenStopsAtItsStream(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			_, dest, srv, alice, room, _ := senderSetup(t, backend)
			ctx := context.Background()
			row, err := srv.DB.GetRoom(ctx, string(room))
			if err != nil {
				t.Fatal(err)
			}
			forkPrevs, forkDepth := row.Extremities, row.MaxDepth+1
			var sent []id.EventID
			for _, body := range []string{"1", "2", "3", "4"} {
				sent = append(sent, sendText(t, alice, room, body))
			}
			// remote.test's event on the head before 1–4.
			version := id.RoomVersion(row.RoomVersion)
			sender := id.UserID("@r:remote.test")
			p := &pdu.PDU{Type: "m.room.message", Sender: sender, RoomID: room, Depth: forkDepth,
				OriginServerTS: time.Now().UnixMilli(), Content: []byte(`{"msgtype":"m.text","body":"1'"}`)}
			for _, x := range forkPrevs {
				p.PrevEvents = append(p.PrevEvents, id.EventID(x))
			}
			for _, k := range p.AuthEventSelection(version) {
				if ev, err := srv.DB.CurrentStateEvent(ctx, string(room), k.Type, k.StateKey); err == nil {
					p.AuthEvents = append(p.AuthEvents, id.EventID(ev.EventID))
				}
			}
			if err := p.Sign(version, "remote.test", dest.key.ID, dest.key.Priv); err != nil {
				t.Fatal(err)
			}
			raw, err := jsonv2.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := srv.Rooms.Input(ctx, room, raw, "remote.test"); err != nil {
				t.Fatalf("the forked event: %v", err)
			}
			for _, body := range []string{"5", "6", "7"} {
				sendText(t, alice, room, body)
			}
			filter := `{"room":{"timeline":{"limit":4}}}`
			r := syncOnce(t, alice, "", filter, 0)
			jr := r.Rooms.Join[room]
			if jr == nil || len(jr.Timeline.Events) != 4 || jr.Timeline.Events[0].Content.Raw["body"] != "1'" {
				t.Fatalf("sync timeline: %+v", jr)
			}
			page := must(alice.Messages(ctx, room, jr.Timeline.PrevBatch, "", mautrix.DirectionBackward, nil, 4))
			var got []id.EventID
			for _, e := range page.Chunk {
				got = append(got, e.ID)
			}
			want := []id.EventID{sent[3], sent[2], sent[1], sent[0]}
			if len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
				t.Fatalf("/messages from %s: %v, want %v", jr.Timeline.PrevBatch, got, want)
			}
		})
	}
}
