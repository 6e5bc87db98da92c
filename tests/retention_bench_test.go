package tests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/sjson"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/retention"
)

// BenchmarkRetentionPurge: events purged per second, 20,000 expired
// messages in one room, on each backend, while a client keeps sending to the
// same room (its send latencies are reported: the purge's batches must not
// hold the write lock long enough to stall them).
//
//	go test -tags goolm -run '^$' -bench BenchmarkRetentionPurge -benchtime 1x ./tests/
func BenchmarkRetentionPurge(b *testing.B) {
	const expired = 20000
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			srv := testserver.Start(b, backend)
			alice := srv.Register(b, "alice")
			cfg := srv.Config.Retention
			cfg.Enabled = false // runs by hand below
			cfg.BatchSize = 500
			p := retention.New(retention.Options{Store: srv.DB, Media: srv.Media, Config: cfg})
			defer p.Close()
			var purged int
			var took time.Duration
			var lat, idle []time.Duration
			for i := range b.N {
				b.StopTimer()
				room := retentionRoomTB(b, srv, alice.AccessToken, time.Hour)
				seedExpired(b, srv, backend, room, expired, i)
				for n := range 30 { // the baseline: sends with no purge running
					t0 := time.Now()
					if r := httpCall(b, srv.URL, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/idle-%d-%d", room, i, n),
						alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "idle"}); r.Status != 200 {
						b.Fatalf("send: %d %s", r.Status, r.Raw)
					}
					idle = append(idle, time.Since(t0))
				}
				b.StartTimer()

				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { // a sender in the same room throughout the purge
					defer wg.Done()
					for n := 0; ; n++ {
						select {
						case <-stop:
							return
						default:
						}
						t0 := time.Now()
						r := httpCall(b, srv.URL, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/bench-%d-%d", room, i, n),
							alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "still sending"})
						if r.Status != 200 {
							b.Errorf("send during the purge: %d %s", r.Status, r.Raw)
							return
						}
						lat = append(lat, time.Since(t0))
					}
				}()
				t0 := time.Now()
				st, err := p.Run(context.Background())
				took += time.Since(t0)
				close(stop)
				wg.Wait()
				if err != nil {
					b.Fatal(err)
				}
				purged += st.Events
			}
			if purged < expired*b.N {
				b.Fatalf("purged %d events, want at least %d", purged, expired*b.N)
			}
			slices.Sort(lat)
			slices.Sort(idle)
			b.ReportMetric(float64(idle[len(idle)/2].Microseconds())/1000, "idle-send-p50-ms")
			b.ReportMetric(float64(purged)/took.Seconds(), "events/s")
			if len(lat) > 0 {
				b.ReportMetric(float64(len(lat))/took.Seconds(), "sends/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "send-p50-ms")
				b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "send-max-ms")
			}
		})
	}
}

// retentionRoomTB creates a room with an m.room.retention max_lifetime.
func retentionRoomTB(b *testing.B, srv *testserver.Server, token string, lifetime time.Duration) string {
	r := httpCall(b, srv.URL, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{
		"initial_state": []any{map[string]any{"type": "m.room.retention", "state_key": "",
			"content": map[string]any{"max_lifetime": lifetime.Milliseconds()}}},
	})
	if r.Status != 200 {
		b.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	return r.Body["room_id"].(string)
}

// seedExpired stores n copies of a real message of room, two hours old, as
// timeline events with their own IDs and stream positions and their search
// rows: sending 20,000 messages through the API would take minutes, and the
// purge reads nothing but these rows.
func seedExpired(b *testing.B, srv *testserver.Server, backend, room string, n, round int) {
	ctx := context.Background()
	var js, sender string
	var depth, before, after int64
	if err := srv.DB.QueryRow(ctx, `SELECT json, sender, depth, state_before, state_after FROM events
		WHERE room_id = $1 AND type = 'm.room.create'`, room).Scan(&js, &sender, &depth, &before, &after); err != nil {
		b.Fatal(err)
	}
	// A message PDU: the create event's skeleton with a message's type and content.
	msg := strings.Replace(js, `"type":"m.room.create"`, `"type":"m.room.message"`, 1)
	msg, err := sjson.SetRaw(msg, "content", `{"msgtype":"m.text","body":"an expired message with some words to index"}`)
	if err != nil {
		b.Fatal(err)
	}
	if msg, err = sjson.Delete(msg, "state_key"); err != nil {
		b.Fatal(err)
	}
	ts := time.Now().Add(-2 * time.Hour).UnixMilli()
	first, finish, err := srv.DB.Stream.AllocateN(n)
	if err != nil {
		b.Fatal(err)
	}
	defer finish()
	search := `INSERT INTO event_search (rowid, body) VALUES `
	if backend == "postgres" {
		search = `INSERT INTO event_search (stream_pos, vector) VALUES `
	}
	const chunk = 250
	for start := 0; start < n; start += chunk {
		var ev, se strings.Builder
		args := []any{room, sender, msg, ts}
		for i := start; i < min(start+chunk, n); i++ {
			if i > start {
				ev.WriteByte(',')
				se.WriteByte(',')
			}
			pos := first + int64(i)
			fmt.Fprintf(&ev, "('$bench-%d-%d', $1, %d, %d, 'm.room.message', NULL, $2, $4, $3, %d, %d)", round, i, pos, depth+1, before, after)
			if backend == "postgres" {
				fmt.Fprintf(&se, "(%d, to_tsvector('english', 'an expired message with some words to index'))", pos)
			} else {
				fmt.Fprintf(&se, "(%d, 'an expired message with some words to index')", pos)
			}
		}
		if _, err := srv.DB.Exec(ctx, `INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,
			origin_server_ts, json, state_before, state_after) VALUES `+ev.String(), args...); err != nil {
			b.Fatal(err)
		}
		if _, err := srv.DB.Exec(ctx, search+se.String()); err != nil {
			b.Fatal(err)
		}
	}
}
