package roomview

import (
	"context"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// PublicRoom is a room directory entry (also the room summary's base).
type PublicRoom struct {
	RoomID           id.RoomID `json:"room_id"`
	Name             string    `json:"name,omitempty"`
	Topic            string    `json:"topic,omitempty"`
	CanonicalAlias   string    `json:"canonical_alias,omitempty"`
	AvatarURL        string    `json:"avatar_url,omitempty"`
	NumJoinedMembers int       `json:"num_joined_members"`
	WorldReadable    bool      `json:"world_readable"`
	GuestCanJoin     bool      `json:"guest_can_join"`
	JoinRule         string    `json:"join_rule,omitempty"`
	RoomType         string    `json:"room_type,omitempty"`
}

// InfoStore is what RoomInfo reads (*storage.DB, or a module's Store).
type InfoStore interface {
	CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error)
	MemberCounts(ctx context.Context, roomID string) (joined, invited int, err error)
}

// RoomInfo summarizes a room from its current state: the room directory's
// entry (directory) and the base of the summary and hierarchy entries.
func RoomInfo(ctx context.Context, db InfoStore, roomID id.RoomID) (*PublicRoom, error) {
	pr := &PublicRoom{RoomID: roomID}
	var err error
	// get reads a field of a state event's content: "" when the room has no
	// such event; the first store error is kept in err.
	get := func(t, path string) string {
		if err != nil {
			return ""
		}
		e, gErr := db.CurrentStateEvent(ctx, string(roomID), t, "")
		if errors.Is(gErr, storage.ErrNotFound) {
			return ""
		}
		if gErr != nil {
			err = fmt.Errorf("reading %s of %s: %w", t, roomID, gErr)
			return ""
		}
		return gjson.GetBytes(e.JSON, "content."+path).Str
	}
	pr.Name, pr.Topic, pr.CanonicalAlias, pr.AvatarURL = get("m.room.name", "name"), get("m.room.topic", "topic"),
		get("m.room.canonical_alias", "alias"), get("m.room.avatar", "url")
	pr.WorldReadable = get("m.room.history_visibility", "history_visibility") == "world_readable"
	pr.GuestCanJoin = get("m.room.guest_access", "guest_access") == "can_join"
	pr.JoinRule = get("m.room.join_rules", "join_rule")
	pr.RoomType = get("m.room.create", "type")
	if err != nil {
		return nil, err
	}
	joined, _, err := db.MemberCounts(ctx, string(roomID))
	if err != nil {
		return nil, fmt.Errorf("counting members of %s: %w", roomID, err)
	}
	pr.NumJoinedMembers = joined
	return pr, nil
}

// roomInfo is RoomInfo over the service's store.
func (s *Service) roomInfo(ctx context.Context, roomID id.RoomID) (*PublicRoom, error) {
	return RoomInfo(ctx, s.db, roomID)
}
