package clientevent

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// Erasure (GDPR, as Synapse does it): the events of a user who deactivated
// with erase: true are shown redacted — their content through the room
// version's redaction algorithm — to every viewer who was not joined to the
// room when the event was sent. Those who were joined saw the event then and
// keep seeing it; later readers (new members, world-readable peekers) never
// see the content. The sender's membership events lose their display name
// and avatar the same way; other state events they sent stay (Erasable). There is no unsigned.redacted_because: no
// redaction event exists.

// eraser decides, for one rendering, which events are shown erased.
type eraser struct {
	store    Store
	v        *Viewer
	erased   map[string]bool   // senders who erased their account
	versions map[string]string // room ID → version, loaded when first needed
}

func newEraser(ctx context.Context, store Store, v *Viewer, evs []*storage.Event, related map[string]*storage.Event) (*eraser, error) {
	senders := make([]string, 0, len(evs)+len(related))
	for _, e := range evs {
		senders = append(senders, e.Sender)
	}
	for _, e := range related {
		senders = append(senders, e.Sender)
	}
	erased, err := store.ErasedUsers(ctx, senders)
	if err != nil {
		return nil, fmt.Errorf("reading erased users: %w", err)
	}
	return &eraser{store: store, v: v, erased: erased}, nil
}

// hides reports whether the viewer sees e in its erased form: its sender
// erased their account and the viewer was not joined when it was sent (a
// viewer whose membership is unknown is taken not to have been).
func (r *eraser) hides(e *storage.Event) bool {
	if !r.erased[e.Sender] || e.Sender == r.v.UserID || !Erasable(e) {
		return false
	}
	return r.v.MembershipAt == nil || r.v.MembershipAt(e.StreamPos) != "join"
}

// Erasable reports whether erasure applies to e: messages and other
// non-state events, and membership events (display name, avatar). The
// room's own state an erased user set (name, topic, encryption, power
// levels, …) describes the room, not the user, and stays: a client that saw
// m.room.encryption without its algorithm would send in the clear.
func Erasable(e *storage.Event) bool {
	return e.StateKey == nil || e.Type == "m.room.member"
}

// content is e's content as the redaction algorithm of its room version leaves it.
func (r *eraser) content(ctx context.Context, e *storage.Event) ([]byte, error) {
	version, ok := r.versions[e.RoomID]
	if !ok {
		row, err := r.store.GetRoom(ctx, e.RoomID)
		if err != nil {
			return nil, fmt.Errorf("reading the version of room %s: %w", e.RoomID, err)
		}
		if r.versions == nil {
			r.versions = map[string]string{}
		}
		version, r.versions[e.RoomID] = row.RoomVersion, row.RoomVersion
	}
	return ErasedContent(id.RoomVersion(version), e.Type, e.JSON), nil
}

// encode renders e, erased when the viewer may not see its content.
func (r *eraser) encode(ctx context.Context, b []byte, e *storage.Event, rel refs, now int64) ([]byte, error) {
	if r.hides(e) {
		c, err := r.content(ctx, e)
		if err != nil {
			return nil, err
		}
		rel.content = c
	}
	return encode(b, e, r.v, rel, now), nil
}

// ErasedContent is the content of the PDU raw as its room version's
// redaction algorithm keeps it ({} for a message).
func ErasedContent(version id.RoomVersion, evType string, raw []byte) []byte {
	c := gjson.GetBytes(raw, "content")
	if !c.IsObject() {
		return []byte("{}")
	}
	out := pdu.RedactContent(evType, json.RawMessage(c.Raw), version)
	if len(out) == 0 {
		return []byte("{}")
	}
	return []byte(out)
}

// HidesErased reports whether v sees e in its erased form (Render shows it
// redacted): search leaves such events out, since their content is what
// would have matched.
func HidesErased(ctx context.Context, store Store, v *Viewer, e *storage.Event) (bool, error) {
	erased, err := store.ErasedUsers(ctx, []string{e.Sender})
	if err != nil {
		return false, err
	}
	r := eraser{v: v, erased: erased}
	if v == nil {
		r.v = &Viewer{}
	}
	return r.hides(e), nil
}
