package tests

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationTimestampToEvent: alice on a.test sends messages with known
// timestamps, then bob on b.test joins over federation (b.test has none of
// them). Bob's /timestamp_to_event for a time before his join finds alice's
// event: b.test asks a.test (federation timestamp_to_event) and backfills up
// to it, even when that takes several backfill requests, so /context and
// /messages read around it. Looking forwards, a stored event that follows a
// gap (bob's join) does not hide the closer one a.test has. A time after
// everything still finds nothing (404), asking a.test changes nothing.
func TestFederationTimestampToEvent(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")

			// sent sends messages 2 ms apart and returns their IDs and a.test's timestamps.
			sent := func(room id.RoomID, prefix string, count int) ([]id.EventID, []int64) {
				var ids []id.EventID
				var tss []int64
				for i := 1; i <= count; i++ {
					x := sendText(t, alice, room, fmt.Sprintf("%s%d", prefix, i))
					se, err := a.DB.GetEvent(ctx, string(x))
					if err != nil {
						t.Fatal(err)
					}
					ids, tss = append(ids, x), append(tss, se.OriginServerTS)
					time.Sleep(2 * time.Millisecond)
				}
				return ids, tss
			}
			lookup := func(room id.RoomID, ts int64, dir mautrix.Direction) (id.EventID, error) {
				resp, err := bob.TimestampToEvent(ctx, room, time.UnixMilli(ts), dir)
				if err != nil {
					return "", err
				}
				return resp.EventID, nil
			}

			// Backwards, with 150 messages after the target: b.test has nothing
			// before bob's join and backfills twice to reach m2.
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			ids, tss := sent(room, "m", 3)
			sent(room, "filler", 150)
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("remote join: %v", err)
			}
			if got, err := lookup(room, tss[1], mautrix.DirectionBackward); err != nil || got != ids[1] {
				t.Fatalf("backwards from m2's time: %s, %v; want m2 %s", got, err, ids[1])
			}
			// limit=0 as Complement asks (mautrix's Context leaves a 0 out).
			var cx mautrix.RespContext
			_, err := bob.MakeRequest(ctx, "GET", bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", room, "context", ids[1]},
				map[string]string{"limit": "0"}), nil, &cx)
			if err != nil {
				t.Fatalf("/context of m2: %v", err)
			}
			older, err := bob.Messages(ctx, room, cx.Start, "", mautrix.DirectionBackward, nil, 10)
			if err != nil || !slices.Contains(bodies(older.Chunk), "m1") || slices.Contains(bodies(older.Chunk), "m2") {
				t.Fatalf("/messages back from /context's start %q (end %q): %v, %+v, %v", cx.Start, cx.End, bodiesOf(older), older, err)
			}
			newer, err := bob.Messages(ctx, room, cx.End, "", mautrix.DirectionBackward, nil, 10)
			if err != nil || !slices.Equal(bodies(newer.Chunk), []string{"m2", "m1"}) {
				t.Fatalf("/messages back from /context's end: %v, %v", bodiesOf(newer), err)
			}

			// Forwards: b.test's answer would be bob's join, next to a gap;
			// a.test's m1 is closer.
			room2 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			ids2, tss2 := sent(room2, "n", 2)
			if _, err := bob.JoinRoom(ctx, string(room2), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("remote join: %v", err)
			}
			if got, err := lookup(room2, tss2[0]-1, mautrix.DirectionForward); err != nil || got != ids2[0] {
				t.Fatalf("forwards from before n1: %s, %v; want n1 %s", got, err, ids2[0])
			}
			if e, err := bob.GetEvent(ctx, room2, ids2[0]); err != nil || e.Content.Raw["body"] != "n1" {
				t.Fatalf("/event of n1 on b.test: %+v, %v", e, err)
			}

			// After everything: nothing, here or on a.test.
			_, err = lookup(room2, time.Now().Add(time.Hour).UnixMilli(), mautrix.DirectionForward)
			if !errors.Is(err, mautrix.MNotFound) {
				t.Fatalf("forwards from an hour ahead: %v, want 404", err)
			}
		})
	}
}

func bodiesOf(r *mautrix.RespMessages) []string {
	if r == nil {
		return nil
	}
	return bodies(r.Chunk)
}
