package roomserver

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

func init() {
	// Room versions 1 and 2 have event IDs that cannot be computed from the
	// event; every PDU we hand to mautrix carries its ID in InternalMeta.
	pdu.UseInternalMetaForGetEventID = true
}

// Limits from the spec ("Size limits").
const (
	MaxPDUBytes   = 65536
	MaxFieldBytes = 255
)

// Event is a room event as the roomserver handles it: the PDU in the form
// mautrix's auth rules take (with InternalMeta.EventID set; for room versions
// 1 and 2 converted from the v1 wire format) and its wire JSON.
type Event struct {
	ID      id.EventID
	RoomID  id.RoomID
	Version id.RoomVersion
	PDU     *pdu.PDU
	JSON    []byte // wire format

	StreamPos   int64
	StateBefore int64
	StateAfter  int64
	SoftFailed  bool
	// Outlier: stored for its content and auth/state role only, outside
	// every timeline (storage.Event.Outlier).
	Outlier bool
	// AfterGap: history before it may be missing here (storage.Event.AfterGap).
	AfterGap bool
	// Relay: taken through send_join/leave/knock, for the sender to pass on
	// (storage.Event.Relay).
	Relay      bool
	RedactedBy string
	// ReplacesState is the state event this state event replaced in the state
	// before it ("" for the first of its key).
	ReplacesState id.EventID
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.PDU.StateKey != nil }

// Key is the event's (type, state_key).
func (e *Event) Key() pdu.StateKey {
	return pdu.StateKey{Type: e.PDU.Type, StateKey: *e.PDU.StateKey}
}

// Membership is the content.membership of a member event.
func (e *Event) Membership() string { return gjson.GetBytes(e.PDU.Content, "membership").Str }

// ContentString reads a string field of the content.
func (e *Event) ContentString(path string) string { return gjson.GetBytes(e.PDU.Content, path).Str }

// parseEvent decodes a stored or received PDU of the given room version.
func parseEvent(version id.RoomVersion, eventID id.EventID, raw []byte) (*Event, error) {
	var p *pdu.PDU
	if version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(raw, &v1); err != nil {
			return nil, fmt.Errorf("decoding v1 PDU: %w", err)
		}
		p = v1ToPDU(&v1)
		if eventID == "" {
			eventID = v1.EventID
		}
	} else {
		p = &pdu.PDU{}
		if err := jsonv2.Unmarshal(raw, p); err != nil {
			return nil, fmt.Errorf("decoding PDU: %w", err)
		}
		if eventID == "" {
			var err error
			if eventID, err = p.GetEventID(version); err != nil {
				return nil, err
			}
		}
	}
	p.InternalMeta.EventID = eventID
	roomID := p.RoomID
	if roomID == "" && p.Type == "m.room.create" && version.RoomIDIsCreateEventID() {
		roomID = id.RoomID("!" + string(eventID[1:]))
	}
	return &Event{ID: eventID, RoomID: roomID, Version: version, PDU: p, JSON: raw}, nil
}

func v1ToPDU(v *pdu.RoomV1PDU) *pdu.PDU {
	refs := func(in []pdu.V1EventReference) []id.EventID {
		out := make([]id.EventID, len(in))
		for i, r := range in {
			out[i] = r.ID
		}
		return out
	}
	return &pdu.PDU{
		AuthEvents: refs(v.AuthEvents), Content: v.Content, Depth: v.Depth, Hashes: v.Hashes,
		OriginServerTS: v.OriginServerTS, PrevEvents: refs(v.PrevEvents), Redacts: v.Redacts, RoomID: v.RoomID,
		Sender: v.Sender, Signatures: v.Signatures, StateKey: v.StateKey, Type: v.Type, Unsigned: v.Unsigned,
	}
}

func eventFromStored(version id.RoomVersion, se *storage.Event) (*Event, error) {
	e, err := parseEvent(version, id.EventID(se.EventID), se.JSON)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", se.EventID, err)
	}
	e.RoomID = id.RoomID(se.RoomID)
	e.StreamPos, e.StateBefore, e.StateAfter, e.SoftFailed, e.RedactedBy = se.StreamPos, se.StateBefore, se.StateAfter, se.SoftFailed, se.RedactedBy
	e.Outlier, e.AfterGap, e.Relay = se.Outlier, se.AfterGap, se.Relay
	return e, nil
}

// proto is an event to build: what the sender chose.
type proto struct {
	Type     string
	StateKey *string
	Sender   id.UserID
	Content  json.RawMessage
	Redacts  id.EventID
	Unsigned json.RawMessage // e.g. invite_room_state; not signed
	TS       int64           // origin_server_ts (0: now)
}

// ref is what a new event needs to know about an event it references.
type ref struct {
	ID     id.EventID
	Hashes *pdu.Hashes
}

// buildEvent assembles, hashes and signs a PDU of the given room version.
func (s *Server) buildEvent(version id.RoomVersion, roomID id.RoomID, p *proto, prev, auth []ref, depth, ts int64) (*Event, error) {
	// A remote event may sit at the top of canonical JSON's range; "if the
	// room's depth is already at the limit, the depth must be set to the
	// limit" (server-server API, PDU depth, room v6+: 2^53-1).
	depth = min(depth, maxCanonicalInt)
	content := p.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	var redacts *id.EventID
	if p.Redacts != "" {
		r := p.Redacts
		redacts = &r
	}
	ids := func(rs []ref) []id.EventID {
		out := make([]id.EventID, len(rs))
		for i, r := range rs {
			out[i] = r.ID
		}
		return out
	}
	keyID, priv := s.key.ID, s.key.Priv
	if version.EventIDFormat() == id.EventIDFormatCustom {
		v1refs := func(rs []ref) []pdu.V1EventReference {
			out := make([]pdu.V1EventReference, len(rs))
			for i, r := range rs {
				out[i].ID = r.ID
				if r.Hashes != nil {
					out[i].Hashes = *r.Hashes
				}
			}
			return out
		}
		v1 := &pdu.RoomV1PDU{
			AuthEvents: v1refs(auth), Content: jsonValue(content), Depth: depth, EventID: s.newV1EventID(),
			OriginServerTS: ts, PrevEvents: v1refs(prev), Redacts: redacts, RoomID: roomID, Sender: p.Sender,
			StateKey: p.StateKey, Type: p.Type,
		}
		if err := v1.Sign(version, s.serverName, keyID, priv); err != nil {
			return nil, fmt.Errorf("signing event: %w", err)
		}
		if len(p.Unsigned) > 0 {
			v1.Unsigned = jsonValue(p.Unsigned)
		}
		raw, err := jsonv2.Marshal(v1)
		if err != nil {
			return nil, err
		}
		pp := v1ToPDU(v1)
		pp.InternalMeta.EventID = v1.EventID
		return &Event{ID: v1.EventID, RoomID: roomID, Version: version, PDU: pp, JSON: raw}, nil
	}
	pp := &pdu.PDU{
		AuthEvents: ids(auth), Content: jsonValue(content), Depth: depth, OriginServerTS: ts,
		PrevEvents: ids(prev), Redacts: redacts, RoomID: roomID, Sender: p.Sender, StateKey: p.StateKey, Type: p.Type,
	}
	if err := pp.Sign(version, s.serverName, keyID, priv); err != nil {
		return nil, fmt.Errorf("signing event: %w", err)
	}
	eventID, err := pp.GetEventID(version)
	if err != nil {
		return nil, fmt.Errorf("computing event ID: %w", err)
	}
	pp.InternalMeta.EventID = eventID
	if len(p.Unsigned) > 0 {
		pp.Unsigned = jsonValue(p.Unsigned)
	}
	raw, err := jsonv2.Marshal(pp)
	if err != nil {
		return nil, err
	}
	if roomID == "" { // room v12+ create event: the room ID derives from the event ID
		roomID = id.RoomID("!" + string(eventID[1:]))
	}
	return &Event{ID: eventID, RoomID: roomID, Version: version, PDU: pp, JSON: raw}, nil
}

func (s *Server) newV1EventID() id.EventID {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return id.EventID("$" + base64.RawURLEncoding.EncodeToString(b) + ":" + s.serverName)
}

// checkSize applies the spec's size limits to a PDU before it is accepted.
func checkSize(e *Event) error {
	p := e.PDU
	if len(p.Type) > MaxFieldBytes {
		return BadJSON("Event type exceeds %d bytes", MaxFieldBytes)
	}
	if p.StateKey != nil && len(*p.StateKey) > MaxFieldBytes {
		return BadJSON("State key exceeds %d bytes", MaxFieldBytes)
	}
	if len(p.Sender) > MaxFieldBytes || len(e.RoomID) > MaxFieldBytes {
		return BadJSON("Sender or room ID exceeds %d bytes", MaxFieldBytes)
	}
	// The limit applies to the canonical PDU as sent over federation, without unsigned.
	c := *p
	c.Unsigned = nil
	raw, err := canonicaljson.Marshal(&c)
	if err != nil {
		return BadJSON("Event cannot be encoded: %w", err)
	}
	if len(raw) > MaxPDUBytes {
		return TooLarge("Event exceeds %d bytes", MaxPDUBytes)
	}
	return nil
}

func jsonValue(raw json.RawMessage) []byte { return []byte(raw) }

// redactedEvent returns e as stored once redacted: the redaction algorithm of
// its room version applied, signatures and hashes kept. (Clients see the
// redaction in unsigned.redacted_because, added when events are rendered.)
func redactedEvent(e *Event) (*Event, error) {
	if e.Version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(e.JSON, &v1); err != nil {
			return nil, err
		}
		r := v1.Clone().Redact(e.Version)
		r.Signatures, r.Hashes = v1.Signatures, v1.Hashes
		raw, err := jsonv2.Marshal(r)
		if err != nil {
			return nil, err
		}
		return parseEvent(e.Version, e.ID, raw)
	}
	r := e.PDU.Clone().Redact(e.Version)
	r.Signatures, r.Hashes = e.PDU.Signatures, e.PDU.Hashes
	raw, err := jsonv2.Marshal(r)
	if err != nil {
		return nil, err
	}
	return parseEvent(e.Version, e.ID, raw)
}
