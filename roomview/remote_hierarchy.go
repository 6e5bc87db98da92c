package roomview

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// RemoteSpaces asks other servers about a room this server does not know:
// GET /_matrix/federation/v1/hierarchy/{roomId} on the given servers in turn
// (the link's via), the first answer taken.
type RemoteSpaces interface {
	RemoteHierarchy(ctx context.Context, servers []string, roomID id.RoomID, suggestedOnly bool) (*ServerHierarchyResponse, error)
}

// Bounds of one client /hierarchy on other servers.
const (
	maxRemoteHierarchyFetches = 10  // rooms asked about, per request
	maxRemoteChildrenState    = 200 // children of one remote space
)

// remoteWalk is what one client /hierarchy learned of other servers' rooms:
// a space's answer describes its children too, so a child that is not a
// space needs no request of its own.
type remoteWalk struct {
	remote        RemoteSpaces
	suggestedOnly bool
	fetches       int
	known         map[id.RoomID]*HierarchyRoom // from answers: a room, or a child of one
	children      map[id.RoomID][]spaceChild   // a fetched space's links
	fetched       map[id.RoomID]bool
}

func newRemoteWalk(remote RemoteSpaces, suggestedOnly bool) *remoteWalk {
	return &remoteWalk{remote: remote, suggestedOnly: suggestedOnly, known: map[id.RoomID]*HierarchyRoom{},
		children: map[id.RoomID][]spaceChild{}, fetched: map[id.RoomID]bool{}}
}

func (w *remoteWalk) enabled() bool { return w.remote != nil }

// room describes roomID and, when descend is set and it is a space, its
// links; ok is false when no server answered (the room is left out).
func (w *remoteWalk) room(ctx context.Context, roomID id.RoomID, via []string, descend bool) (*HierarchyRoom, []spaceChild, bool) {
	hr := w.known[roomID]
	needFetch := hr == nil || (descend && hr.RoomType == "m.space" && !w.fetched[roomID])
	if needFetch && w.fetches < maxRemoteHierarchyFetches {
		w.fetches++
		w.fetch(ctx, roomID, via)
		hr = w.known[roomID]
	}
	if hr == nil {
		return nil, nil, false
	}
	out := *hr
	out.ChildrenState = []json.RawMessage{}
	if !descend || hr.RoomType != "m.space" {
		return &out, nil, true
	}
	return &out, w.children[roomID], true
}

// fetch asks roomID's servers and records what the answer says, checked:
// room IDs valid, the room the one asked about, children links parsed as
// local ones are.
func (w *remoteWalk) fetch(ctx context.Context, roomID id.RoomID, via []string) {
	w.fetched[roomID] = true
	resp, err := w.remote.RemoteHierarchy(ctx, via, roomID, w.suggestedOnly)
	if err != nil {
		slog.Debug("hierarchy: no server described a remote room", "room", roomID, "via", via, "err", err)
		return
	}
	if resp.Room == nil || resp.Room.RoomID != roomID {
		return
	}
	room := *resp.Room
	var links []spaceChild
	for i, raw := range resp.Room.ChildrenState {
		if i == maxRemoteChildrenState {
			break
		}
		ev := gjson.ParseBytes(raw)
		key := ev.Get("state_key")
		if ev.Get("type").Str != "m.space.child" || key.Type != gjson.String || !roomserver.ValidRoomID(key.Str) {
			continue
		}
		if c, ok := childLink(key.Str, ev.Get("sender").Str, ev.Get("origin_server_ts").Int(), ev.Get("content"), w.suggestedOnly); ok {
			links = append(links, c)
		}
	}
	sortChildren(links)
	room.ChildrenState = nil
	w.known[roomID] = &room
	w.children[roomID] = links
	for _, c := range resp.Children {
		if c != nil && roomserver.ValidRoomID(string(c.RoomID)) && w.known[c.RoomID] == nil {
			w.known[c.RoomID] = &HierarchyRoom{PublicRoom: c.PublicRoom, AllowedRoomIDs: c.AllowedRoomIDs}
		}
	}
}
