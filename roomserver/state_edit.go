package roomserver

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/id"
)

// MaySendState reports whether user, joined to the room, has the power to
// send a state event of evType there now (the directory's check for
// deleting an alias or publishing the room). M_NOT_FOUND for an unknown room.
func (s *Server) MaySendState(ctx context.Context, user id.UserID, roomID id.RoomID, evType string) (bool, error) {
	rs, err := s.snapshotState(ctx, roomID)
	if err != nil {
		return false, err
	}
	pl := s.powerLevels(rs)
	return rs.membership(user) == "join" && s.userLevel(rs, user) >= pl.GetEventLevel(eventType(evType, true)), nil
}

// EditState sends, as sender, a new version of the room's state event
// (evType, stateKey) made by edit from the current content (nil when
// unset); edit returns false to leave the event as it is. The edit runs in
// the room's worker, so no other change of the room comes between the read
// and the write. It reports whether an event was sent.
func (s *Server) EditState(ctx context.Context, sender id.UserID, roomID id.RoomID, evType, stateKey string,
	edit func(content json.RawMessage) (json.RawMessage, bool)) (bool, error) {
	_, err := s.submit(ctx, roomID, &request{makers: []maker{func(rs *roomState) (*proto, error) {
		var cur json.RawMessage
		if e := rs.get(evType, stateKey); e != nil {
			cur = e.PDU.Content
		}
		content, changed := edit(cur)
		if !changed {
			return nil, errSkip
		}
		return &proto{Type: evType, StateKey: stateKeyPtr(stateKey), Sender: sender, Content: content}, nil
	}}})
	if errors.Is(err, errSkip) {
		return false, nil
	}
	return err == nil, err
}
