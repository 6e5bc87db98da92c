package accounts

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Room tags are the room account data "m.tag": {"tags": {tag: content}}.

// maxTagsBytes bounds a room's m.tag account data: each tag's content (the
// client's whole body, normally {"order": n}) is kept in it and sent in /sync.
// Without a bound one PUT stored 9 MB, past the account data bounds.
const maxTagsBytes = 64 * 1024

// maxTagBytes bounds a tag's name, as the roomserver bounds event fields.
const maxTagBytes = 255

// Tags returns a user's tags on a room.
func (s *Service) Tags(ctx context.Context, user id.UserID, roomID id.RoomID) (json.RawMessage, error) {
	raw, err := s.store.GetAccountData(ctx, string(user), string(roomID), "m.tag")
	if errors.Is(err, storage.ErrNotFound) || (err == nil && len(raw) == 0) {
		return json.RawMessage(`{"tags":{}}`), nil
	}
	return raw, err
}

// SetTag adds or removes (content nil) a tag on a room.
func (s *Service) SetTag(ctx context.Context, user id.UserID, roomID id.RoomID, tag string, content json.RawMessage) error {
	if tag == "" || len(tag) > maxTagBytes {
		return mxhttp.InvalidParam("Invalid tag")
	}
	raw, err := s.Tags(ctx, user, roomID)
	if err != nil {
		return err
	}
	var doc struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	_ = json.Unmarshal(raw, &doc)
	if doc.Tags == nil {
		doc.Tags = map[string]json.RawMessage{}
	}
	if content == nil {
		delete(doc.Tags, tag)
	} else {
		if o := gjson.GetBytes(content, "order"); o.Exists() && o.Type != gjson.Number {
			return mxhttp.BadJSON("order must be a number")
		}
		doc.Tags[tag] = content
	}
	stored, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	if content != nil && len(stored) > maxTagsBytes {
		return mxhttp.TooLarge("A room's tags may hold at most %d bytes", maxTagsBytes)
	}
	pos, finish, err := s.store.AllocateStreamPos()
	if err != nil {
		return err
	}
	err = s.store.PutAccountData(ctx, string(user), string(roomID), "m.tag", stored, pos)
	finish()
	if err != nil {
		return err
	}
	if s.notifier != nil {
		s.notifier.Notify(pos, string(user))
	}
	return nil
}
