package tests

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// residencyUpload uploads a small PNG as c to srv and returns its mxc:// URI.
func residencyUpload(t *testing.T, srv *testserver.Server, c *mautrix.Client, w int) string {
	t.Helper()
	up := rawMedia(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=pic.png", c.AccessToken, "image/png", testPNG(t, w, 8))
	if up.Status != http.StatusOK {
		t.Fatalf("upload: %d %s", up.Status, up.Raw)
	}
	return up.Body["content_uri"].(string)
}

// waitReferenced polls srv's mxc reference record until room references uri.
func waitReferenced(t *testing.T, srv *testserver.Server, uri string, room id.RoomID, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rooms, err := srv.DB.MediaRefRooms(context.Background(), uri, 10)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(rooms, string(room)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s's reference record never had %s in %s (has %v)", what, srv.Config.ServerName, uri, room, rooms)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestResidencyMedia: an image uploaded on a1 and posted in a room of zone
// a reaches a2 (its client downloads it through a2) but not b, neither
// asked directly over federation (403 with the reason) nor through b's own
// client API (b stores nothing); posted in an open room it becomes servable
// to b; an upload no room references is refused to b. The reference record
// holds events that came over federation and m.room.member avatars; a1's
// audit trail has the flow to a2 and the refusals of b.
func TestResidencyMedia(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend)
			ctx := ctxT(t)
			alice := n.a1.Register(t, "alice")
			carol := n.a2.Register(t, "carol")
			bob := n.b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := carol.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}); err != nil {
				t.Fatalf("a2 joining a zone-a room: %v", err)
			}
			uri := residencyUpload(t, n.a1, alice, 16)
			mediaID := strings.TrimPrefix(uri, "mxc://a1.test/")
			sendImage(t, alice, room, uri)

			// a2's user downloads it through a2, which fetches it from a1.
			r := rawMedia(t, "GET", n.a2.URL+"/_matrix/client/v1/media/download/a1.test/"+mediaID, carol.AccessToken, "", nil)
			if r.Status != http.StatusOK || r.Raw != string(testPNG(t, 16, 8)) {
				t.Fatalf("a2's client downloading a zone-a image: %d %s", r.Status, r.Raw[:min(len(r.Raw), 200)])
			}

			// b, asking a1 directly, signed with its key: refused with the reason.
			fromB := n.net.client(t, "b.test", n.b.SigningKey)
			fedGet := func(kind string) (int, string) {
				t.Helper()
				_, resp, err := fromB.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a1.test", Method: http.MethodGet,
					Path: mfed.URLPath{"v1", "media", kind, mediaID}, Query: map[string][]string{"width": {"8"}, "height": {"8"}},
					Authenticate: true, DontReadBody: true})
				if resp == nil {
					t.Fatalf("federation %s: %v", kind, err)
				}
				defer resp.Body.Close()
				var httpErr mautrix.HTTPError
				if errors.As(err, &httpErr) && httpErr.RespError != nil {
					return resp.StatusCode, httpErr.RespError.ErrCode + ": " + httpErr.RespError.Err
				}
				return resp.StatusCode, ""
			}
			for _, kind := range []string{"download", "thumbnail"} {
				status, msg := fedGet(kind)
				if status != http.StatusForbidden || !strings.HasPrefix(msg, "M_FORBIDDEN") || !strings.Contains(msg, "zone a") {
					t.Fatalf("b's federation %s of a zone-a image: %d %q, want 403 M_FORBIDDEN naming zone a", kind, status, msg)
				}
			}
			// b's user, through b's client API: an error, and b keeps nothing.
			r = rawMedia(t, "GET", n.b.URL+"/_matrix/client/v1/media/download/a1.test/"+mediaID, bob.AccessToken, "", nil)
			if r.Status == http.StatusOK {
				t.Fatal("b's client downloaded a zone-a image")
			}
			if row, err := n.b.DB.GetMedia(ctx, "a1.test", mediaID); !errors.Is(err, storage.ErrNotFound) && (err != nil || row.SHA256 != "") {
				t.Fatalf("b's media store holds the zone-a image: %+v, %v", row, err)
			}

			// An upload referenced nowhere is refused to b.
			lone := strings.TrimPrefix(residencyUpload(t, n.a1, alice, 12), "mxc://a1.test/")
			_, resp, err := fromB.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a1.test", Method: http.MethodGet,
				Path: mfed.URLPath{"v1", "media", "download", lone}, Authenticate: true, DontReadBody: true})
			if resp == nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(err.Error(), "not referenced") {
				t.Fatalf("b's download of an unreferenced upload: %v, want 403 (not referenced)", err)
			}
			if resp != nil {
				resp.Body.Close()
			}

			// The same image posted in an open room: now b may have it.
			open := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "open-x"})
			sendImage(t, alice, open, uri)
			if status, msg := fedGet("download"); status != http.StatusOK {
				t.Fatalf("b's federation download of an image posted in an open room: %d %s", status, msg)
			}
			r = rawMedia(t, "GET", n.b.URL+"/_matrix/client/v1/media/download/a1.test/"+mediaID, bob.AccessToken, "", nil)
			if r.Status != http.StatusOK {
				t.Fatalf("b's client downloading an image posted in an open room: %d %s", r.Status, r.Raw[:min(len(r.Raw), 200)])
			}

			// The record: a2 has the image from an event that came over
			// federation; a member avatar is recorded (on a1, and on a2 from
			// alice's member event over federation).
			waitReferenced(t, n.a2, uri, room, "an event received over federation")
			avatar := residencyUpload(t, n.a1, alice, 10)
			if err := alice.SetAvatarURL(ctx, id.MustParseContentURI(avatar)); err != nil {
				t.Fatalf("setting an avatar: %v", err)
			}
			waitReferenced(t, n.a1, avatar, room, "an m.room.member avatar")
			waitReferenced(t, n.a2, avatar, room, "an m.room.member avatar received over federation")

			// a1's audit trail: the image's flow to a2 and b, b's refusals.
			admin := auditAdmin(t, n.a1)
			waitFlow(t, admin, audit.Outbound, "a2.test", "the image", func(f audit.Flow) bool {
				return f.Media == uri && f.Data[audit.DataMedia] == 1 && f.Bytes == len(testPNG(t, 16, 8))
			})
			refusals := 0
			for _, rec := range auditRecords(t, admin) {
				var rf audit.Refusal
				if rec.Kind == audit.KindRefusal && json.Unmarshal(rec.Body, &rf) == nil && rf.Server == "b.test" && rf.Kind == audit.DataMedia {
					refusals++
				}
			}
			// The image's download and thumbnail (the same refusal, recorded
			// once a minute: b's own fetch is the same again), the unreferenced upload.
			if refusals < 2 {
				t.Fatalf("%d media refusal records for b on a1, want at least 2", refusals)
			}
		})
	}
}

// TestResidencyMediaRemoteFetch: with zone open not sharing media, a1's
// user cannot have b's media through a1: 403 M_FORBIDDEN with the reason,
// for downloads and thumbnails, and no request for it reaches b. The
// unauthenticated legacy download endpoints are refused under the policy.
func TestResidencyMediaRemoteFetch(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend, residencyPolicy(func(r *config.Residency) {
				r.Zones[1].Share = map[string]bool{"media": false}
			}), func(c *config.Config) { c.Media.LegacyUnauthenticated = true })
			alice := n.a1.Register(t, "alice")
			bob := n.b.Register(t, "bob")
			uri := residencyUpload(t, n.b, bob, 16)
			mediaID := strings.TrimPrefix(uri, "mxc://b.test/")
			for _, path := range []string{"download/b.test/" + mediaID, "thumbnail/b.test/" + mediaID + "?width=8&height=8"} {
				r := rawMedia(t, "GET", n.a1.URL+"/_matrix/client/v1/media/"+path, alice.AccessToken, "", nil)
				if r.Status != http.StatusForbidden || r.errcode() != "M_FORBIDDEN" || !strings.Contains(r.Raw, "zone open") {
					t.Fatalf("a1's client fetching b's media (%s): %d %s, want 403 naming zone open", path, r.Status, r.Raw)
				}
			}
			if n.wire.mentions(mediaID) {
				t.Fatalf("a request for b's media reached b: %v", n.wire.paths())
			}
			// Our own media through the unauthenticated legacy endpoint: refused.
			own := strings.TrimPrefix(residencyUpload(t, n.a1, alice, 8), "mxc://")
			if r := rawMedia(t, "GET", n.a1.URL+"/_matrix/media/v3/download/"+own, "", "", nil); r.Status != http.StatusForbidden {
				t.Fatalf("legacy unauthenticated download under the policy: %d %s, want 403", r.Status, r.Raw)
			}
			if r := rawMedia(t, "GET", n.a1.URL+"/_matrix/client/v1/media/download/"+own, alice.AccessToken, "", nil); r.Status != http.StatusOK {
				t.Fatalf("authenticated download of our own media: %d %s", r.Status, r.Raw)
			}
		})
	}
}

// TestMediaRefsBackfillOnFirstStart: a server whose store holds events the
// reference record never saw (as after an upgrade: no cursor, no rows) fills
// the record from its history when it starts; meanwhile lookups find the
// references past the cursor (the tail).
func TestMediaRefsBackfillOnFirstStart(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			conf := restartableOptions(t, nil)
			srv := testserver.Start(t, backend, conf)
			ctx := ctxT(t)
			alice := srv.Register(t, "alice")
			room := createRoom(t, alice, nil)
			uri := residencyUpload(t, srv, alice, 16)
			sendImage(t, alice, room, uri)
			waitReferenced(t, srv, uri, room, "a local image")
			for _, f := range srv.Followers {
				if f.Name() == storage.MediaRefsFollower {
					f.Close()
				}
			}
			if _, err := srv.DB.Exec(ctx, `DELETE FROM media_refs`); err != nil {
				t.Fatal(err)
			}
			if _, err := srv.DB.Exec(ctx, `DELETE FROM stream_cursors WHERE name = $1`, storage.MediaRefsFollower); err != nil {
				t.Fatal(err)
			}
			if rooms, err := srv.DB.MediaRefRooms(ctx, uri, 10); err != nil || len(rooms) != 0 {
				t.Fatalf("record after clearing: %v %v", rooms, err)
			}
			tail, err := srv.DB.MediaRefTail(ctx, uri, 10)
			if err != nil || len(tail) != 1 || tail[0].RoomID != string(room) {
				t.Fatalf("unrecorded references (tail) = %+v, %v; want the image's event", tail, err)
			}
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}
			srv2 := testserver.Start(t, backend, conf)
			waitReferenced(t, srv2, uri, room, "the backfill of history on first start")
		})
	}
}

// TestResidencyMediaEncryptedRoom: an attachment sent inside encrypted
// events is referenced nowhere the server can read; a1 serves it to a2,
// which shares an encrypted zone-a room with the uploader, and to no server
// that shares no such room with them (b, though in zone open; a2 too, for
// an uploader it shares only an unencrypted room with).
func TestResidencyMediaEncryptedRoom(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend)
			ctx := ctxT(t)
			alice := n.a1.Register(t, "alice")
			dave := n.a1.Register(t, "dave")
			carol := n.a2.Register(t, "carol")
			n.b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
				Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
			plain := createRoom(t, dave, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			for _, r := range []id.RoomID{room, plain} {
				if _, err := carol.JoinRoom(ctx, string(r), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}); err != nil {
					t.Fatalf("a2 joining: %v", err)
				}
			}
			// The attachment goes out only inside ciphertext.
			uri := residencyUpload(t, n.a1, alice, 16)
			if _, err := alice.SendMessageEvent(ctx, room, event.EventEncrypted, map[string]any{"algorithm": "m.megolm.v1.aes-sha2",
				"ciphertext": "opaque", "sender_key": "k", "session_id": "s", "device_id": "D"}); err != nil {
				t.Fatal(err)
			}
			daves := residencyUpload(t, n.a1, dave, 12)
			fedStatus := func(from *mfed.Client, uri string) int {
				t.Helper()
				_, resp, err := from.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a1.test", Method: http.MethodGet,
					Path: mfed.URLPath{"v1", "media", "download", strings.TrimPrefix(uri, "mxc://a1.test/")}, Authenticate: true,
					DontReadBody: true})
				if resp == nil {
					t.Fatalf("federation download: %v", err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			fromA2 := n.net.client(t, "a2.test", n.a2.SigningKey)
			fromB := n.net.client(t, "b.test", n.b.SigningKey)
			if got := fedStatus(fromA2, uri); got != http.StatusOK {
				t.Errorf("a2, sharing an encrypted zone-a room with the uploader: %d, want 200", got)
			}
			if got := fedStatus(fromB, uri); got != http.StatusForbidden {
				t.Errorf("b, sharing no room with the uploader: %d, want 403", got)
			}
			if got := fedStatus(fromA2, daves); got != http.StatusForbidden {
				t.Errorf("a2, sharing only an unencrypted room with an uploader who never posted it: %d, want 403", got)
			}
		})
	}
}
