// Package clientevent renders stored events (storage.Event) in the
// client-server API's event format for one viewer. It is the one renderer:
// /messages, /context, /event, /state, /members, /sync, sliding sync,
// relations, threads, notifications, search and push-rule evaluation all use
// it, so an event reads the same whichever endpoint serves it.
//
// Rendering works on the stored PDU bytes (gjson, no full parse), since /sync
// renders every timeline event it serves.
package clientevent

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/storage"
)

// Store loads the events a rendering refers to: redactions
// (unsigned.redacted_because) and replaced state events
// (unsigned.prev_content); which senders erased their account, and the room
// version whose redaction algorithm their events are shown through.
// *storage.DB satisfies it.
type Store interface {
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	ErasedUsers(ctx context.Context, userIDs []string) (map[string]bool, error)
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
}

// Viewer is whom events are rendered for. The zero Viewer renders without
// the viewer-dependent unsigned keys.
type Viewer struct {
	// UserID and DeviceID: unsigned.transaction_id is shown only to the
	// device that sent the event with a transaction ID.
	UserID   string
	DeviceID string
	// MembershipAt is the viewer's membership at the event at a stream
	// position (unsigned.membership, MSC4115); nil leaves it out.
	MembershipAt func(pos int64) string
	// CanSee reports whether the viewer may see the event at a stream
	// position: prev_content is shown only when the replaced event is
	// visible. nil shows no prev_content.
	CanSee func(pos int64) (bool, error)
}

// Render renders evs for v, in order, one output per event. The redactions
// and replaced events they refer to are loaded in one query.
func Render(ctx context.Context, store Store, v *Viewer, evs []*storage.Event) ([]json.RawMessage, error) {
	if v == nil {
		v = &Viewer{}
	}
	var related []string
	for _, e := range evs {
		if e.RedactedBy != "" {
			related = append(related, e.RedactedBy)
		}
		if e.ReplacesState != "" && v.CanSee != nil {
			related = append(related, e.ReplacesState)
		}
	}
	var loaded map[string]*storage.Event
	if len(related) > 0 {
		var err error
		if loaded, err = store.GetEvents(ctx, related); err != nil {
			return nil, fmt.Errorf("loading the events rendered events refer to: %w", err)
		}
	}
	er, err := newEraser(ctx, store, v, evs, loaded)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		var rel refs
		if r := loaded[e.RedactedBy]; r != nil && e.RedactedBy != "" {
			if rel.redactedBecause, err = er.encode(ctx, nil, r, refs{}, now); err != nil {
				return nil, err
			}
		}
		if p := loaded[e.ReplacesState]; p != nil && e.ReplacesState != "" {
			ok, err := v.CanSee(p.StreamPos)
			if err != nil {
				return nil, err
			}
			c := gjson.GetBytes(p.JSON, "content")
			if ok && c.IsObject() {
				rel.prevContent = c.Raw
				rel.prevSender = p.Sender
				if er.hides(p) {
					pruned, err := er.content(ctx, p)
					if err != nil {
						return nil, err
					}
					rel.prevContent = string(pruned)
				}
			}
		}
		if out[i], err = er.encode(ctx, make([]byte, 0, len(e.JSON)/2+256), e, rel, now); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// One renders a single event (see Render).
func One(ctx context.Context, store Store, v *Viewer, e *storage.Event) (json.RawMessage, error) {
	out, err := Render(ctx, store, v, []*storage.Event{e})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// WithUnsigned returns a rendered event with key set in its unsigned object
// (bundled aggregations such as m.relations). The encoding always ends with
// the unsigned object, so this is an append, not a re-parse.
func WithUnsigned(ev json.RawMessage, key string, value any) (json.RawMessage, error) {
	v, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("encoding unsigned.%s: %w", key, err)
	}
	out := make([]byte, 0, len(ev)+len(key)+len(v)+4)
	out = append(out, ev[:len(ev)-2]...) // drop the closing "}}"
	out = append(out, ',')
	out = appendString(out, key)
	out = append(out, ':')
	out = append(out, v...)
	return append(out, '}', '}'), nil
}

// PushEvent is the event as push rules see it (mautrix's pushrules
// evaluate an *event.Event): the client format without a viewer. nil when
// the stored PDU does not decode.
func PushEvent(e *storage.Event) *event.Event {
	var ev event.Event
	if err := json.Unmarshal(encode(nil, e, &Viewer{}, refs{}, time.Now().UnixMilli()), &ev); err != nil {
		return nil
	}
	if ev.Content.Raw == nil {
		ev.Content.Raw = map[string]any{}
		_ = json.Unmarshal(ev.Content.VeryRaw, &ev.Content.Raw)
	}
	return &ev
}

// Stripped is the StrippedStateEvent form of a state event (invite and knock
// state, room previews): content, sender, state_key and type.
func Stripped(e *storage.Event) json.RawMessage {
	b := make([]byte, 0, 256)
	b = append(b, `{"content":`...)
	b = appendContent(b, e.JSON)
	b = append(b, `,"sender":`...)
	b = appendString(b, e.Sender)
	b = append(b, `,"state_key":`...)
	sk := ""
	if e.StateKey != nil {
		sk = *e.StateKey
	}
	b = appendString(b, sk)
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	return append(b, '}')
}

// refs is what a rendering needs beyond the event row.
type refs struct {
	redactedBecause []byte // the redaction, rendered
	prevContent     string // the replaced event's content, when visible
	prevSender      string // its sender (unsigned.prev_sender), shown with prev_content
	content         []byte // replaces the PDU's content (an erased sender's event, erasure.go)
}

// encode writes the client format of e: keys in lexical order, unsigned last
// (WithUnsigned relies on it). The identifying keys come from the row's
// columns (the same values as the PDU's); content and redacts from the PDU.
func encode(b []byte, e *storage.Event, v *Viewer, rel refs, now int64) []byte {
	b = append(b, `{"content":`...)
	if rel.content != nil {
		b = append(b, rel.content...)
	} else {
		b = appendContent(b, e.JSON)
	}
	b = append(b, `,"event_id":`...)
	b = appendString(b, e.EventID)
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, e.OriginServerTS, 10)
	if e.Type == "m.room.redaction" {
		// Room v11 moved redacts into content; clients still read it at the top.
		r := gjson.GetBytes(e.JSON, "redacts")
		if r.Type != gjson.String {
			r = gjson.GetBytes(e.JSON, "content.redacts")
		}
		if r.Type == gjson.String {
			b = append(b, `,"redacts":`...)
			b = appendString(b, r.Str)
		}
	}
	b = append(b, `,"room_id":`...)
	b = appendString(b, e.RoomID)
	b = append(b, `,"sender":`...)
	b = appendString(b, e.Sender)
	if e.StateKey != nil {
		b = append(b, `,"state_key":`...)
		b = appendString(b, *e.StateKey)
	}
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	b = append(b, `,"unsigned":{"age":`...)
	b = strconv.AppendInt(b, max(now-e.OriginServerTS, 0), 10)
	if v.MembershipAt != nil {
		b = append(b, `,"membership":`...)
		b = appendString(b, v.MembershipAt(e.StreamPos))
	}
	if rel.prevContent != "" {
		b = append(b, `,"prev_content":`...)
		b = append(b, rel.prevContent...)
		if rel.prevSender != "" {
			b = append(b, `,"prev_sender":`...)
			b = appendString(b, rel.prevSender)
		}
	}
	if rel.redactedBecause != nil {
		b = append(b, `,"redacted_because":`...)
		b = append(b, rel.redactedBecause...)
	}
	if e.ReplacesState != "" {
		b = append(b, `,"replaces_state":`...)
		b = appendString(b, e.ReplacesState)
	}
	if e.TxnID != "" && v.DeviceID != "" && e.Sender == v.UserID && e.TxnDevice == v.DeviceID {
		b = append(b, `,"transaction_id":`...)
		b = appendString(b, e.TxnID)
	}
	return append(b, '}', '}')
}

// appendContent appends the PDU's content object ({} when it has none).
func appendContent(b []byte, pdu []byte) []byte {
	if c := gjson.GetBytes(pdu, "content"); c.IsObject() {
		return append(b, c.Raw...)
	}
	return append(b, '{', '}')
}

// appendString appends s as a JSON string: directly when it needs no
// escaping (identifiers nearly always), through encoding/json otherwise.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
