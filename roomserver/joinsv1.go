package roomserver

import (
	jsonv2 "encoding/json/v2"
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Room versions 1 and 2 over make_join/send_join: their events carry their
// own event_id ($opaque:origin), which the joining server chooses, so the
// template has none and the signed join brings ours.

// signJoinV1 is SignJoin for room versions 1 and 2: the template (a v1
// PDU: prev and auth events as [id, hashes] pairs) gets an event ID of our
// server, our timestamp, content hash and signature.
func (s *Server) signJoinV1(roomID id.RoomID, version id.RoomVersion, template []byte, user id.UserID) ([]byte, id.EventID, error) {
	var p pdu.RoomV1PDU
	if err := jsonv2.Unmarshal(template, &p); err != nil {
		return nil, "", BadJSON("Invalid join template: %v", err)
	}
	if p.Type != "m.room.member" || p.StateKey == nil || *p.StateKey != string(user) || p.Sender != user || p.RoomID != roomID ||
		gjson.GetBytes(p.Content, "membership").Str != "join" {
		return nil, "", BadJSON("The join template is not %s's join of %s", user, roomID)
	}
	if len(p.PrevEvents) == 0 || len(p.PrevEvents) > 20 || len(p.AuthEvents) > 10 {
		return nil, "", BadJSON("The join template's prev_events or auth_events are out of bounds")
	}
	p.Hashes, p.Signatures, p.Unsigned = nil, nil, nil
	p.EventID = s.newV1EventID()
	p.OriginServerTS = time.Now().UnixMilli()
	if err := p.Sign(version, s.serverName, s.key.ID, s.key.Priv); err != nil {
		return nil, "", fmt.Errorf("signing join: %w", err)
	}
	raw, err := jsonv2.Marshal(&p)
	if err != nil {
		return nil, "", err
	}
	ev, err := parseEvent(version, "", raw)
	if err != nil {
		return nil, "", fmt.Errorf("reading our join back: %w", err)
	}
	if err := checkSize(ev); err != nil {
		return nil, "", err
	}
	return raw, p.EventID, nil
}

// checkV1EventOrigin: in room versions 1 and 2 the event ID names the server
// that made the event; a member event sent by origin must carry one of
// origin's IDs (another server's ID could clash with its events).
func checkV1EventOrigin(ev *Event, origin string) error {
	if ev.Version.EventIDFormat() != id.EventIDFormatCustom {
		return nil
	}
	_, server, ok := strings.Cut(string(ev.ID), ":")
	if !ok || !strings.HasPrefix(string(ev.ID), "$") || server != origin {
		return BadJSON("The event ID %s is not of server %s", ev.ID, origin)
	}
	return nil
}
