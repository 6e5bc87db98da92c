package tests

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// retentionConfig enables the purge with a short interval and small batches
// (several transactions per room).
func retentionConfig(c *config.Config) {
	c.Retention.Enabled = true
	c.Retention.PurgeInterval = config.Duration{Duration: 100 * time.Millisecond}
	c.Retention.BatchSize = 7
}

// retentionRoom creates a room whose m.room.retention keeps messages for
// lifetime, with a topic (state, never purged).
func retentionRoom(t *testing.T, c *mautrix.Client, lifetime time.Duration) id.RoomID {
	t.Helper()
	r := clientCall(t, c, "POST", "/_matrix/client/v3/createRoom", map[string]any{
		"topic": "topic-kept",
		"initial_state": []any{map[string]any{"type": "m.room.retention", "state_key": "",
			"content": map[string]any{"max_lifetime": lifetime.Milliseconds()}}},
	})
	if r.Status != 200 {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	return id.RoomID(r.Body["room_id"].(string))
}

func sendImage(t *testing.T, c *mautrix.Client, room id.RoomID, mxc string) id.EventID {
	t.Helper()
	resp, err := c.SendMessageEvent(context.Background(), room, event.EventMessage, map[string]any{
		"msgtype": "m.image", "body": "picture.png", "url": mxc, "info": map[string]any{"thumbnail_url": mxc}})
	if err != nil {
		t.Fatalf("sending an image: %v", err)
	}
	return resp.EventID
}

// purgedCount is how many of a room's events the purge redacted.
func purgedCount(t *testing.T, srv *testserver.Server, room id.RoomID) int {
	t.Helper()
	var n int
	if err := srv.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM events WHERE room_id = $1 AND redacted_by = $2`,
		string(room), storage.RetentionPurged).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkRetentionConsistent checks the store's invariants for a room the
// purge works on: no event row removed (total), every state event whole,
// every message either whole with its search row or purged (its redacted
// form, no content, no search row).
func checkRetentionConsistent(t *testing.T, srv *testserver.Server, backend string, room id.RoomID, total int) (purged int) {
	t.Helper()
	ctx := context.Background()
	searchKey := "rowid"
	if backend == "postgres" {
		searchKey = "stream_pos"
	}
	rows, err := srv.DB.Query(ctx, `SELECT e.event_id, e.type, e.state_key IS NOT NULL, e.json, COALESCE(e.redacted_by, ''),
		(SELECT COUNT(*) FROM event_search s WHERE s.`+searchKey+` = e.stream_pos)
		FROM events e WHERE e.room_id = $1`, string(room))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var eventID, typ, js, by string
		var state bool
		var indexed int
		if err := rows.Scan(&eventID, &typ, &state, &js, &by, &indexed); err != nil {
			t.Fatal(err)
		}
		n++
		content := gjson.Get(js, "content")
		switch {
		case state:
			if by != "" || !content.IsObject() || len(content.Map()) == 0 && typ != "m.room.history_visibility" {
				t.Errorf("state event %s (%s) touched: redacted_by %q, %s", eventID, typ, by, js)
			}
		case by == storage.RetentionPurged:
			if len(content.Map()) != 0 || indexed != 0 || gjson.Get(js, "signatures").Raw == "" || gjson.Get(js, "prev_events").Raw == "" {
				t.Errorf("purged event %s not in its redacted form (search rows %d): %s", eventID, indexed, js)
			}
			purged++
		case typ == "m.room.message":
			if content.Get("body").Str == "" || indexed != 1 {
				t.Errorf("message %s half-purged (search rows %d): %s", eventID, indexed, js)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != total {
		t.Errorf("room holds %d events, want %d: the purge must keep every row", n, total)
	}
	return purged
}

func countRoomEvents(t *testing.T, srv *testserver.Server, room id.RoomID) int {
	t.Helper()
	var n int
	if err := srv.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM events WHERE room_id = $1`, string(room)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func uploadPNG(t *testing.T, srv *testserver.Server, token string, w int) string {
	t.Helper()
	up := rawMedia(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=p.png", token, "image/png", testPNG(t, w, 40))
	if up.Status != 200 {
		t.Fatalf("upload: %d %s", up.Status, up.Raw)
	}
	return up.Body["content_uri"].(string)
}

// TestRetentionPurge: a room with max_lifetime gets its old messages purged
// on schedule while newer ones and all state stay. Purged events are kept in
// their redacted form (the room graph, federation and state resolution need
// them), so /messages, /sync, /context and /event show them redacted with no
// content, search no longer finds them, and media only they named answers
// 404 (download and thumbnail) while media the room avatar (state) names stays.
func TestRetentionPurge(t *testing.T) {
	const lifetime = 6 * time.Second
	forEachBackendWith(t, testserver.Options{Configure: retentionConfig}, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := retentionRoom(t, alice, lifetime)
		// A room without a policy (and no default): never purged.
		other := createRoom(t, alice, nil)
		keptOther := sendText(t, alice, other, "oldword in a room without a policy")

		picA := uploadPNG(t, srv, alice.AccessToken, 60) // named only by old messages
		picB := uploadPNG(t, srv, alice.AccessToken, 61) // named by an old message and the room's avatar (state)
		if _, err := alice.SendStateEvent(context.Background(), room, event.StateRoomAvatar, "", map[string]any{"url": picB}); err != nil {
			t.Fatal(err)
		}
		mxcA := strings.TrimPrefix(picA, "mxc://")
		if r := rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/thumbnail/"+mxcA+"?width=32&height=32&method=scale", alice.AccessToken, "", nil); r.Status != 200 {
			t.Fatalf("thumbnail before the purge: %d", r.Status)
		}
		old := map[id.EventID]bool{}
		for i := range 20 {
			old[sendText(t, alice, room, fmt.Sprintf("oldword %d", i))] = true
		}
		old[sendImage(t, alice, room, picA)] = true
		old[sendImage(t, alice, room, picB)] = true
		time.Sleep(lifetime + 200*time.Millisecond) // the last old message expires

		freshStart := time.Now()
		fresh := map[id.EventID]bool{}
		for i := range 3 {
			fresh[sendText(t, alice, room, fmt.Sprintf("freshword %d", i))] = true
		}
		fresh[sendImage(t, alice, room, picA+"fresh")] = true // an mxc URI of an unknown media ID: nothing to delete
		total := countRoomEvents(t, srv, room)

		deadline := time.Now().Add(lifetime / 2)
		for purgedCount(t, srv, room) < len(old) {
			if time.Now().After(deadline) {
				t.Fatalf("purged %d of %d expired events", purgedCount(t, srv, room), len(old))
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Media deletion follows the events' batches in the same run.
		for rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+mxcA, alice.AccessToken, "", nil).Status != 404 {
			if time.Now().After(deadline) {
				t.Fatal("media named only by purged events still served")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n := checkRetentionConsistent(t, srv, backendOf(t), room, total); n != len(old) {
			t.Fatalf("%d events purged, want the %d old ones", n, len(old))
		}

		v3 := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room))
		isPurged := func(where string, ev gjson.Result) {
			eid := id.EventID(ev.Get("event_id").Str)
			switch {
			case old[eid]:
				if c := ev.Get("content"); !c.IsObject() || len(c.Map()) != 0 || ev.Get("unsigned.redacted_because").Exists() {
					t.Errorf("%s: purged event %s shown as %s", where, eid, ev.Raw)
				}
			case fresh[eid]:
				if ev.Get("content.body").Str == "" {
					t.Errorf("%s: fresh event %s lost its content: %s", where, eid, ev.Raw)
				}
			}
		}
		seen := func(where string, evs []gjson.Result) {
			var o, f int
			for _, ev := range evs {
				isPurged(where, ev)
				if old[id.EventID(ev.Get("event_id").Str)] {
					o++
				}
				if fresh[id.EventID(ev.Get("event_id").Str)] {
					f++
				}
			}
			if o != len(old) || f != len(fresh) {
				t.Errorf("%s shows %d purged and %d fresh events, want %d and %d", where, o, f, len(old), len(fresh))
			}
		}
		r := clientCall(t, alice, "GET", v3+"/messages?dir=b&limit=100", nil)
		seen("/messages", gjson.Get(r.Raw, "chunk").Array())
		filter := url.QueryEscape(`{"room":{"timeline":{"limit":100}}}`)
		r = clientCall(t, alice, "GET", "/_matrix/client/v3/sync?filter="+filter, nil)
		seen("/sync", gjson.Get(r.Raw, "rooms.join."+gjson.Escape(string(room))+".timeline.events").Array())
		for eid := range old {
			r = clientCall(t, alice, "GET", v3+"/event/"+url.PathEscape(string(eid)), nil)
			isPurged("/event", gjson.Parse(r.Raw))
			r = clientCall(t, alice, "GET", v3+"/context/"+url.PathEscape(string(eid))+"?limit=2", nil)
			isPurged("/context", gjson.Get(r.Raw, "event"))
			break
		}
		if r = clientCall(t, alice, "GET", v3+"/state/m.room.topic/", nil); gjson.Get(r.Raw, "topic").Str != "topic-kept" {
			t.Errorf("topic after the purge: %d %s", r.Status, r.Raw)
		}
		search := func(term string) int64 {
			r := clientCall(t, alice, "POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{
				"room_events": map[string]any{"search_term": term, "filter": map[string]any{"rooms": []string{string(room)}}}}})
			return gjson.Get(r.Raw, "search_categories.room_events.count").Int()
		}
		if n := search("oldword"); n != 0 {
			t.Errorf("search finds %d purged messages", n)
		}
		if n := search("freshword"); n != 3 {
			t.Errorf("search finds %d fresh messages, want 3", n)
		}
		r = rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/thumbnail/"+mxcA+"?width=32&height=32&method=scale", alice.AccessToken, "", nil)
		if r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
			t.Errorf("thumbnail of purged media: %d %s", r.Status, r.Raw)
		}
		if r = rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(picB, "mxc://"), alice.AccessToken, "", nil); r.Status != 200 {
			t.Errorf("media the room's avatar names: %d", r.Status)
		}
		r = clientCall(t, alice, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(other))+"/event/"+url.PathEscape(string(keptOther)), nil)
		if gjson.Get(r.Raw, "content.body").Str == "" {
			t.Errorf("a room without a policy lost a message: %s", r.Raw)
		}
		if time.Since(freshStart) >= lifetime {
			t.Fatalf("assertions took past the fresh messages' lifetime: the fresh checks prove nothing (slow machine)")
		}
	})
}

// backendOf is the backend a forEachBackend subtest runs on (its name).
func backendOf(t *testing.T) string {
	name := t.Name()
	return name[strings.LastIndex(name, "/")+1:]
}

// TestRetentionRestartMidPurge: a server stopped while the purge is under
// way leaves every event either whole or purged (each batch is one
// transaction), and the purge completes after a restart, media included.
func TestRetentionRestartMidPurge(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			enabled := false
			conf := restartableOptions(t, func(c *config.Config) {
				retentionConfig(c)
				c.Retention.Enabled = enabled
				c.Retention.BatchSize = 5
			})
			srv := testserver.Start(t, backend, conf)
			alice := srv.Register(t, "alice")
			room := retentionRoom(t, alice, time.Millisecond)
			pic := uploadPNG(t, srv, alice.AccessToken, 50)
			sendImage(t, alice, room, pic)
			for i := range 120 {
				sendText(t, alice, room, fmt.Sprintf("oldword %d", i))
			}
			total := countRoomEvents(t, srv, room)
			messages := 121
			shutdown := func(s *testserver.Server) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := s.Shutdown(ctx); err != nil {
					t.Fatal(err)
				}
			}
			shutdown(srv)

			// Started with retention on: stopped as soon as the first batches are in.
			enabled = true
			srv = testserver.Start(t, backend, conf)
			for start := time.Now(); purgedCount(t, srv, room) == 0; time.Sleep(time.Millisecond) {
				if time.Since(start) > 20*time.Second {
					t.Fatal("nothing purged")
				}
			}
			shutdown(srv)
			enabled = false
			srv = testserver.Start(t, backend, conf)
			n := checkRetentionConsistent(t, srv, backend, room, total)
			t.Logf("stopped with %d of %d messages purged", n, messages)
			shutdown(srv)

			enabled = true
			srv = testserver.Start(t, backend, conf)
			deadline := time.Now().Add(20 * time.Second)
			mxc := strings.TrimPrefix(pic, "mxc://")
			// Done: every message purged, the media deleted and forgotten.
			pending := func() int {
				var n int
				if err := srv.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM retention_media`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			for purgedCount(t, srv, room) < messages || pending() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("after the restart: %d of %d purged, %d media pending", purgedCount(t, srv, room), messages, pending())
				}
				time.Sleep(20 * time.Millisecond)
			}
			checkRetentionConsistent(t, srv, backend, room, total)
			if r := rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+mxc, alice.AccessToken, "", nil); r.Status != 404 {
				t.Fatalf("purged media after the restart: %d", r.Status)
			}
		})
	}
}
