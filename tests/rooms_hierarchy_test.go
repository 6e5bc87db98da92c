package tests

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestHierarchyDepthFirstSpacesOnly: /hierarchy walks the space tree depth
// first, each space's children in the spec's order (a valid order key
// first, then the link's origin_server_ts, then room ID), follows
// m.space.child links of spaces only, pages along the same walk, and
// refuses a from token with other max_depth or suggested_only. The tree is
// Complement's TestClientSpacesSummary:
//
//	Root ─ R1, SS1, R2 ; SS1 ─ SS2 ; SS2 ─ R3, R4 (R4 ordered "a") ; R2 (not a space) ─ R5
func TestHierarchyDepthFirstSpacesOnly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		names := map[id.RoomID]string{}
		mk := func(name string, space bool) id.RoomID {
			req := &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name}
			if space {
				req.CreationContent = map[string]any{"type": "m.space"}
			}
			room := createRoom(t, alice, req)
			names[room] = name
			return room
		}
		root, r1, ss1, r2 := mk("Root", true), mk("R1", false), mk("SS1", true), mk("R2", false)
		ss2, r3, r4, r5 := mk("SS2", true), mk("R3", false), mk("R4", false), mk("R5", false)
		link := func(parent, child id.RoomID, extra map[string]any) {
			content := map[string]any{"via": []string{"localhost"}}
			for k, v := range extra {
				content[k] = v
			}
			must(alice.SendStateEvent(ctx, parent, event.StateSpaceChild, string(child), content))
			time.Sleep(3 * time.Millisecond) // distinct origin_server_ts
		}
		link(root, r1, map[string]any{"suggested": true})
		link(root, ss1, nil)
		link(root, r2, map[string]any{"suggested": true})
		link(r2, r5, nil) // R2 is no space: not a link
		link(ss1, ss2, nil)
		link(ss2, r3, nil)
		link(ss2, r4, map[string]any{"order": "a"})

		type room struct {
			RoomID        id.RoomID `json:"room_id"`
			ChildrenState []struct {
				StateKey string `json:"state_key"`
			} `json:"children_state"`
		}
		get := func(query string) ([]room, string) {
			t.Helper()
			r := clientCall(t, alice, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(root))+"/hierarchy"+query, nil)
			if r.Status != 200 {
				t.Fatalf("hierarchy%s = %d %s", query, r.Status, r.Raw)
			}
			var body struct {
				Rooms     []room `json:"rooms"`
				NextBatch string `json:"next_batch"`
			}
			must(0, json.Unmarshal([]byte(r.Raw), &body))
			return body.Rooms, body.NextBatch
		}
		order := func(rooms []room) string {
			var out []string
			for _, r := range rooms {
				out = append(out, names[r.RoomID])
			}
			return strings.Join(out, ",")
		}
		children := func(rooms []room, of id.RoomID) string {
			for _, r := range rooms {
				if r.RoomID == of {
					var out []string
					for _, c := range r.ChildrenState {
						out = append(out, names[id.RoomID(c.StateKey)])
					}
					return strings.Join(out, ",")
				}
			}
			return "missing"
		}

		all, next := get("")
		if got := order(all); got != "Root,R1,SS1,SS2,R4,R3,R2" || next != "" {
			t.Fatalf("walk: %s (next %q)", got, next)
		}
		for parent, want := range map[id.RoomID]string{root: "R1,SS1,R2", ss2: "R4,R3", r2: "", ss1: "SS2"} {
			if got := children(all, parent); got != want {
				t.Errorf("children of %s: %s, want %s", names[parent], got, want)
			}
		}

		page1, next := get("?limit=4")
		if got := order(page1); got != "Root,R1,SS1,SS2" || next == "" {
			t.Fatalf("page 1: %s (next %q)", got, next)
		}
		page2, next2 := get("?limit=4&from=" + url.QueryEscape(next))
		if got := order(page2); got != "R4,R3,R2" || next2 != "" {
			t.Fatalf("page 2: %s (next %q)", got, next2)
		}
		for _, q := range []string{"?max_depth=1&from=", "?suggested_only=true&from="} {
			r := clientCall(t, alice, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(root))+"/hierarchy"+q+url.QueryEscape(next), nil)
			if r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("hierarchy%s<token> = %d %s, want 400 M_INVALID_PARAM", q, r.Status, r.Raw)
			}
		}

		if got, _ := get("?max_depth=1"); order(got) != "Root,R1,SS1,R2" {
			t.Errorf("max_depth=1: %s", order(got))
		}
		if got, _ := get("?suggested_only=true"); order(got) != "Root,R1,R2" || children(got, root) != "R1,R2" {
			t.Errorf("suggested_only: %s", order(got))
		}
	})
}
