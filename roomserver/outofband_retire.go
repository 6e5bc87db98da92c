package roomserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// ReceiveOutOfBandMember takes a PDU of a room this server does not know
// (arriving by /send) when it ends a local user's out-of-band invite or knock:
// an m.room.member leave or ban of that user, sent by a user of origin
// (a resident server's moderator rescinding the invite, or refusing the
// knock), whose content hash is intact and whose sender's server signed it.
// It is recorded out of band on top of the invite, so the user's /sync moves
// the room to leave. Any other PDU of an unknown room is ErrUnknownRoom, as
// before; a PDU naming such a user that fails the checks is ErrRejected.
// Nothing is authorized against the room's state, which we do not have: the
// inviter's server is trusted as the invite itself was.
func (s *Server) ReceiveOutOfBandMember(ctx context.Context, origin string, raw []byte) (id.EventID, error) {
	if len(raw) > MaxPDUBytes {
		return "", unknownRoom()
	}
	r := gjson.ParseBytes(raw)
	roomID, user := id.RoomID(r.Get("room_id").Str), id.UserID(r.Get("state_key").Str)
	if r.Get("type").Str != "m.room.member" || r.Get("state_key").Type != gjson.String || !s.isLocal(user) {
		return "", unknownRoom()
	}
	o, err := s.OutOfBand(ctx, user, roomID)
	if errors.Is(err, ErrNotFound) {
		return "", unknownRoom()
	} else if err != nil {
		return "", err
	}
	if !SupportedRoomVersion(string(o.RoomVersion)) {
		return "", unknownRoom()
	}
	ev, err := parseEvent(o.RoomVersion, "", raw)
	if err != nil {
		return "", rejected("invalid event: %v", err)
	}
	if ev.ID == o.EventID && o.Membership != "invite" && o.Membership != "knock" {
		return ev.ID, nil // the same retirement again
	}
	if o.Membership != "invite" && o.Membership != "knock" {
		return "", unknownRoom()
	}
	switch m := ev.Membership(); {
	case ev.RoomID != roomID || ev.PDU.StateKey == nil || *ev.PDU.StateKey != string(user):
		return ev.ID, rejected("not a member event of %s in %s", user, roomID)
	case m != "leave" && m != "ban":
		return ev.ID, unknownRoom()
	case ev.PDU.Sender.Homeserver() != origin || origin == s.serverName:
		return ev.ID, rejected("sender %s is not of origin %s", ev.PDU.Sender, origin)
	case o.Membership == "invite" && ev.PDU.Sender != o.Sender:
		// Only the inviter rescinds an invite we hold (as Synapse): anyone
		// else's kick of a user not in the room we cannot check here.
		return ev.ID, rejected("only the inviter %s may rescind the invite", o.Sender)
	}
	if err := checkSize(ev); err != nil {
		return ev.ID, rejected("%v", err)
	}
	if !verifyContentHash(ev) {
		return ev.ID, rejected("content hash mismatch")
	}
	if err := s.verifySignature(ev); err != nil {
		return ev.ID, rejected("bad signature: %v", err)
	}
	if ev.PDU.Depth < o.Depth {
		// It ends an earlier invite or knock (a rejected knock's leave
		// delivered after the user knocked again): the one we hold is newer
		// in the room. Accepted, nothing changed.
		return ev.ID, nil
	}
	if _, err := s.db.GetEvent(ctx, string(ev.ID)); err == nil {
		return ev.ID, nil // sent again
	} else if !errors.Is(err, storage.ErrNotFound) {
		return ev.ID, err
	}
	stored, err := sjson.DeleteBytes(raw, "unsigned")
	if err != nil {
		return ev.ID, err
	}
	if err := s.storeOutOfBand(ctx, ev, o.RoomVersion, stored); err != nil {
		return ev.ID, err
	}
	return ev.ID, nil
}

func rejected(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRejected, fmt.Sprintf(format, args...))
}
