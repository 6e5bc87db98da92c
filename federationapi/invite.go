package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/roomserver"
)

// Invites is the writer's side of an invite received over federation (roomserver).
type Invites interface {
	ReceiveInvite(ctx context.Context, req roomserver.InviteRequest) ([]byte, error)
}

// maxInviteBody bounds an invite request: the event plus its stripped state.
const maxInviteBody = roomserver.MaxPDUBytes + roomserver.MaxStrippedBytes + 4096

// PUT /_matrix/federation/v1/invite/{roomId}/{eventId}: the body is the
// event, its stripped state in unsigned.invite_room_state; the answer is
// the v1 array [200, {"event": …}]. v1 carries no room version: the
// stripped create event's, else "1" (v1 is for rooms of versions 1 and 2).
func (a *API) inviteV1(r *http.Request) (any, error) {
	raw, err := readInviteBody(r)
	if err != nil {
		return nil, err
	}
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, mxhttp.BadJSON("The body is not an event")
	}
	var unsigned struct {
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if u, ok := ev["unsigned"]; ok && json.Unmarshal(u, &unsigned) != nil {
		return nil, mxhttp.BadJSON("Invalid unsigned.invite_room_state")
	}
	delete(ev, "unsigned")
	version := id.RoomVersion("1")
	for _, s := range unsigned.InviteRoomState {
		var st struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
			Content  struct {
				RoomVersion string `json:"room_version"`
			} `json:"content"`
		}
		if json.Unmarshal(s, &st) == nil && st.Type == "m.room.create" && st.StateKey == "" && st.Content.RoomVersion != "" {
			version = id.RoomVersion(st.Content.RoomVersion)
		}
	}
	event, _ := json.Marshal(ev)
	signed, err := a.receiveInvite(r, version, event, unsigned.InviteRoomState)
	if err != nil {
		return nil, err
	}
	return []any{200, map[string]any{"event": json.RawMessage(signed)}}, nil
}

// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: the body is
// {room_version, event, invite_room_state}; the answer {"event": …}.
func (a *API) inviteV2(r *http.Request) (any, error) {
	raw, err := readInviteBody(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		RoomVersion     id.RoomVersion    `json:"room_version"`
		Event           json.RawMessage   `json:"event"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || len(body.Event) == 0 || body.RoomVersion == "" {
		return nil, mxhttp.BadJSON("The body needs room_version, event and invite_room_state")
	}
	// Any unsigned data of the event's own is the sender's, not stored.
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(body.Event, &ev); err != nil {
		return nil, mxhttp.BadJSON("event is not an object")
	}
	delete(ev, "unsigned")
	event, _ := json.Marshal(ev)
	signed, err := a.receiveInvite(r, body.RoomVersion, event, body.InviteRoomState)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": json.RawMessage(signed)}, nil
}

func (a *API) receiveInvite(r *http.Request, version id.RoomVersion, event []byte, stripped []json.RawMessage) ([]byte, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	eventID, err := eventIDParam(mxhttp.PathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	if a.residency != nil {
		origin := federation.Origin(r.Context())
		d := a.residency.Invited(r.Context(), string(roomID), origin, stripped)
		if err := a.refuse(r, d, origin, residency.Events, string(roomID)); err != nil {
			return nil, err
		}
	}
	signed, err := a.invites.ReceiveInvite(r.Context(), roomserver.InviteRequest{Origin: federation.Origin(r.Context()), RoomID: roomID,
		EventID: id.EventID(eventID), RoomVersion: version, Event: event, InviteRoomState: stripped})
	switch {
	case errors.Is(err, roomserver.ErrUnsupportedRoomVersion):
		return nil, mxhttp.IncompatibleRoomV("Room version %s is not supported", version).With("room_version", string(version))
	case errors.Is(err, roomserver.ErrConflict):
		return nil, mxhttp.Forbidden("The room became known while the invite was stored; send it by /send")
	case err != nil:
		return nil, roomAnswer(err)
	}
	return signed, nil
}

func readInviteBody(r *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxInviteBody+1))
	if err != nil {
		return nil, mxhttp.BadJSON("Reading the body: %v", err)
	}
	if len(raw) > maxInviteBody {
		return nil, mxhttp.TooLarge("The invite exceeds %d bytes", maxInviteBody)
	}
	if !json.Valid(raw) {
		return nil, mxhttp.NotJSON("The body is not JSON")
	}
	return raw, nil
}
