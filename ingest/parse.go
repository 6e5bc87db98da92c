package ingest

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Txn is a parsed transaction body.
type Txn struct {
	Origin string
	PDUs   []json.RawMessage
	EDUs   []EDU
}

// EDU is one parsed EDU of a transaction.
type EDU struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// ParseTransaction parses and bounds a transaction body: 400 M_BAD_JSON for
// a malformed one (an EDU not an object, its edu_type not a string), 413
// M_TOO_LARGE beyond MaxPDUs or MaxEDUs, or an EDU's content beyond
// MaxEDUBytes.
func ParseTransaction(body []byte) (*Txn, error) {
	if len(body) > MaxBodyBytes {
		return nil, mxhttp.TooLarge("Transaction exceeds %d bytes", MaxBodyBytes)
	}
	var raw struct {
		Origin string             `json:"origin"`
		PDUs   *[]json.RawMessage `json:"pdus"`
		EDUs   []json.RawMessage  `json:"edus"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, mxhttp.BadJSON("Malformed transaction: %v", err)
	}
	if raw.PDUs == nil {
		return nil, mxhttp.BadJSON("Transaction has no pdus")
	}
	if len(*raw.PDUs) > MaxPDUs {
		return nil, mxhttp.TooLarge("Transaction has %d PDUs, at most %d allowed", len(*raw.PDUs), MaxPDUs)
	}
	if len(raw.EDUs) > MaxEDUs {
		return nil, mxhttp.TooLarge("Transaction has %d EDUs, at most %d allowed", len(raw.EDUs), MaxEDUs)
	}
	edus := make([]EDU, len(raw.EDUs))
	for i, r := range raw.EDUs {
		if err := json.Unmarshal(r, &edus[i]); err != nil {
			return nil, mxhttp.BadJSON("Malformed EDU %d: %v", i, err)
		}
		if len(edus[i].Content) > MaxEDUBytes {
			return nil, mxhttp.TooLarge("EDU %d content exceeds %d bytes", i, MaxEDUBytes)
		}
	}
	return &Txn{Origin: raw.Origin, PDUs: *raw.PDUs, EDUs: edus}, nil
}

// PDU is a checked PDU: its room, version, event ID and what the later
// stages need, with the raw JSON the writer verifies.
type PDU struct {
	Raw        []byte
	RoomID     id.RoomID
	Version    id.RoomVersion
	EventID    id.EventID
	Sender     id.UserID
	Depth      int64
	PrevEvents []id.EventID
}

// StageError is a per-PDU failure with a bounded reason for the metrics.
type StageError struct {
	Reason string // a fixed label: bad_json, too_large, unknown_room, origin, missing_prev, ...
	Msg    string
}

func (e *StageError) Error() string { return e.Msg }

func fail(reason, format string, args ...any) error {
	return &StageError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// reasonOf maps an error to its metric label.
func reasonOf(err error) string {
	var se *StageError
	if errors.As(err, &se) {
		return se.Reason
	}
	if errors.Is(err, roomserver.ErrRejected) {
		switch msg := err.Error(); {
		case strings.Contains(msg, "signature"):
			return "signature"
		case strings.Contains(msg, "prev event"):
			return "missing_prev"
		}
		return "auth"
	}
	return "internal"
}

// Check is stage 1: the PDU's size and format, its room's version (a room
// this server does not know: "room not found", never stored), its event ID,
// and the room's server ACL for the origin. The origin need not be the
// sender's server: a resident server passes on the joins, leaves and knocks
// it took through send_* (Synapse does so too, without signing them); what
// vouches for an event is its sender's server's signature, which the writer
// checks with the hashes.
// versions caches room versions within a transaction. On failure the
// returned PDU, when not nil, carries the event ID the error is reported under.
func (e *Engine) Check(ctx context.Context, origin string, raw []byte, versions map[id.RoomID]id.RoomVersion) (*PDU, error) {
	p, err := parsePDU(raw, func(roomID id.RoomID) (id.RoomVersion, error) {
		if v, ok := versions[roomID]; ok {
			return v, nil
		}
		v, err := roomVersion(ctx, e.o.Store, roomID)
		if err == nil {
			versions[roomID] = v
		}
		return v, err
	})
	if err != nil {
		return p, err
	}
	if err := e.checkACL(ctx, p.RoomID, origin); err != nil {
		return p, err
	}
	if err := e.checkRejected(ctx, p); err != nil {
		return p, err
	}
	return p, nil
}

// checkACL refuses a PDU from an origin the room's current m.room.server_acl
// denies (spec: server ACLs apply to each PDU of /send by its room).
func (e *Engine) checkACL(ctx context.Context, roomID id.RoomID, origin string) error {
	if e.o.ServerACL == nil {
		return nil
	}
	acl, err := e.o.Store.CurrentStateEvent(ctx, string(roomID), "m.room.server_acl", "")
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the server ACL of %s: %w", roomID, err)
	}
	if !e.o.ServerACL(acl.JSON, origin) {
		return fail("acl", "server %s is denied by the room's server ACL", origin)
	}
	return nil
}

func roomVersion(ctx context.Context, store Store, roomID id.RoomID) (id.RoomVersion, error) {
	row, err := store.GetRoom(ctx, string(roomID))
	if errors.Is(err, storage.ErrNotFound) {
		return "", fail("unknown_room", "room not found")
	}
	if err != nil {
		return "", fmt.Errorf("reading room %s: %w", roomID, err)
	}
	return id.RoomVersion(row.RoomVersion), nil
}

// parsePDU parses a PDU under its room's version (from versionOf).
func parsePDU(raw []byte, versionOf func(id.RoomID) (id.RoomVersion, error)) (*PDU, error) {
	if len(raw) > roomserver.MaxPDUBytes {
		return nil, fail("too_large", "PDU exceeds %d bytes", roomserver.MaxPDUBytes)
	}
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || !roomserver.ValidRoomID(head.RoomID) {
		return nil, fail("bad_json", "PDU has no valid room_id")
	}
	roomID := id.RoomID(head.RoomID)
	version, err := versionOf(roomID)
	if err != nil {
		return guessID(raw, roomID), err
	}
	p := &PDU{Raw: raw, RoomID: roomID, Version: version}
	if version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(raw, &v1); err != nil {
			return nil, fail("bad_json", "malformed PDU: %v", err)
		}
		p.EventID, p.Sender, p.Depth = v1.EventID, v1.Sender, v1.Depth
		for _, r := range v1.PrevEvents {
			p.PrevEvents = append(p.PrevEvents, r.ID)
		}
	} else {
		var v pdu.PDU
		if err := jsonv2.Unmarshal(raw, &v); err != nil {
			return nil, fail("bad_json", "malformed PDU: %v", err)
		}
		if p.EventID, err = v.GetEventID(version); err != nil {
			return nil, fail("bad_json", "computing the event ID: %v", err)
		}
		p.Sender, p.Depth, p.PrevEvents = v.Sender, v.Depth, v.PrevEvents
	}
	if !roomserver.ValidEventID(string(p.EventID)) {
		return nil, fail("bad_json", "PDU has no valid event ID")
	}
	if !roomserver.ValidUserID(string(p.Sender)) {
		return p, fail("bad_json", "PDU has no valid sender")
	}
	if len(p.PrevEvents) > maxPrevEvents {
		return p, fail("bad_json", "PDU has %d prev_events, at most %d allowed", len(p.PrevEvents), maxPrevEvents)
	}
	return p, nil
}

// maxPrevEvents bounds the prev_events of a PDU we accept (the spec caps
// what servers send at 20).
const maxPrevEvents = 20

// guessID names a PDU of a room whose version is unknown, to report its
// error under: its event_id field, or its ID as in current room versions.
func guessID(raw []byte, roomID id.RoomID) *PDU {
	var v pdu.PDU
	if jsonv2.Unmarshal(raw, &v) != nil {
		return nil
	}
	var withID struct {
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal(raw, &withID)
	evID := id.EventID(withID.EventID)
	if evID == "" {
		evID, _ = v.GetEventID(id.RoomV10)
	}
	if !roomserver.ValidEventID(string(evID)) {
		return nil
	}
	return &PDU{Raw: raw, RoomID: roomID, EventID: evID}
}
