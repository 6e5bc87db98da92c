package roomserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// SendRequest is a client's message or state event.
type SendRequest struct {
	Sender   id.UserID
	DeviceID id.DeviceID
	RoomID   id.RoomID
	Type     string
	StateKey *string // nil for message events
	Content  json.RawMessage
	TxnID    string // message events: idempotency key per device
}

// Send builds, authorizes and persists a client event, returning its ID.
// A retried transaction ID returns the original event.
func (s *Server) Send(ctx context.Context, r SendRequest) (id.EventID, error) {
	if !ValidEventType(r.Type) {
		return "", InvalidParam("Invalid event type")
	}
	if r.StateKey != nil && len(*r.StateKey) > MaxFieldBytes {
		return "", InvalidParam("State key exceeds %d bytes", MaxFieldBytes)
	}
	if len(r.Content) > MaxPDUBytes {
		return "", TooLarge("Event exceeds %d bytes", MaxPDUBytes)
	}
	// Content that could not be signed as canonical JSON is the client's
	// fault (M_BAD_JSON), found before anything is built.
	if err := mxhttp.CheckEventJSON(r.Content); err != nil {
		return "", eventJSONError(err)
	}
	obj := gjson.ParseBytes(r.Content)
	if !obj.IsObject() {
		return "", BadJSON("Event content must be a JSON object")
	}
	var txn *storage.TxnRecord
	if r.TxnID != "" && !(r.Type == "m.room.redaction" && r.StateKey == nil) { // Redact keys its own
		txn = &storage.TxnRecord{UserID: string(r.Sender), DeviceID: string(r.DeviceID),
			TxnID: txnScope("send", string(r.RoomID), r.Type, r.TxnID), ClientTxnID: r.TxnID}
		if _, evID, err := s.db.LookupTxn(ctx, txn.UserID, txn.DeviceID, txn.TxnID); err == nil {
			return id.EventID(evID), nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return "", err
		}
	}
	version, err := RoomVersion(ctx, s.db, r.RoomID)
	if errors.Is(err, ErrUnknownRoom) {
		return "", Forbidden("You are not in this room")
	} else if err != nil {
		return "", err
	}
	if r.StateKey != nil {
		switch r.Type {
		case "m.room.power_levels":
			if err := validatePowerLevels(version, r.Content); err != nil {
				return "", err
			}
		case "m.room.canonical_alias":
			if err := s.validateCanonicalAlias(ctx, r.RoomID, r.Content); err != nil {
				return "", err
			}
		case "m.room.create":
			// Only createRoom makes one; from v12 it also names the room (MSC4291).
			return "", InvalidParam("The create event cannot be sent; rooms are created with /createRoom")
		case "m.room.member":
			return s.sendMember(ctx, r) // through the membership endpoints' checks
		case "m.room.redaction":
			return "", errRedactionState
		}
	}
	if r.Type == "m.room.redaction" && r.StateKey == nil {
		target := obj.Get("redacts").Str
		if target == "" {
			return "", BadJSON("Redaction needs content.redacts")
		}
		return s.Redact(ctx, r.Sender, r.DeviceID, r.RoomID, id.EventID(target), obj.Get("reason").Str, r.TxnID)
	}
	var unchanged id.EventID
	evs, err := s.submit(ctx, r.RoomID, &request{txn: txn, makers: []maker{func(rs *roomState) (*proto, error) {
		if r.StateKey != nil && rs.membership(r.Sender) != "join" && r.Type != "m.room.member" {
			return nil, Forbidden("You are not in this room")
		}
		if r.StateKey != nil && r.Type == "m.room.power_levels" && rs.version.PrivilegedRoomCreators() {
			if err := checkCreatorsUnlisted(r.Content, creators(rs)); err != nil {
				return nil, err
			}
		}
		// Setting state to what it already is, as its sender, changes nothing:
		// answer with the current event rather than add a duplicate (as Synapse does).
		if r.StateKey != nil {
			if cur := rs.get(r.Type, *r.StateKey); cur != nil && cur.PDU.Sender == r.Sender && sameContent(cur.PDU.Content, r.Content) {
				unchanged = cur.ID
				return nil, errSkip
			}
		}
		return &proto{Type: r.Type, StateKey: r.StateKey, Sender: r.Sender, Content: r.Content}, nil
	}}})
	if errors.Is(err, errSkip) && unchanged != "" {
		return unchanged, nil
	}
	if err != nil {
		return "", err
	}
	return evs[len(evs)-1].ID, nil
}

// validateCanonicalAlias checks that the aliases of an m.room.canonical_alias
// event are valid and, for local ones, point at the room (M_BAD_ALIAS).
func (s *Server) validateCanonicalAlias(ctx context.Context, roomID id.RoomID, content []byte) error {
	obj := gjson.ParseBytes(content)
	var aliases []string
	if a := obj.Get("alias"); a.Exists() {
		if a.Type != gjson.String {
			return InvalidParam("alias must be a string")
		}
		if a.Str != "" {
			aliases = append(aliases, a.Str)
		}
	}
	if alt := obj.Get("alt_aliases"); alt.Exists() {
		if !alt.IsArray() {
			return InvalidParam("alt_aliases must be a list")
		}
		for _, a := range alt.Array() {
			if a.Type != gjson.String {
				return InvalidParam("alt_aliases must be a list of strings")
			}
			aliases = append(aliases, a.Str)
		}
	}
	for _, a := range aliases {
		if !ValidAlias(a) {
			return InvalidParam("Invalid alias %q", a)
		}
		if _, server, _ := strings.Cut(a, ":"); server != s.serverName {
			continue // remote aliases would need a federation query
		}
		target, _, err := s.db.ResolveAlias(ctx, a)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && target != string(roomID)) {
			return NewError(ErrBadAlias, "Alias %s does not point to this room", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Redact sends a redaction of eventID.
func (s *Server) Redact(ctx context.Context, sender id.UserID, deviceID id.DeviceID, roomID id.RoomID, eventID id.EventID, reason, txnID string) (id.EventID, error) {
	if !ValidEventID(string(eventID)) {
		return "", InvalidParam("Invalid event ID")
	}
	var txn *storage.TxnRecord
	if txnID != "" {
		txn = &storage.TxnRecord{UserID: string(sender), DeviceID: string(deviceID),
			TxnID: txnScope("redact", string(roomID), string(eventID), txnID), ClientTxnID: txnID}
		if _, evID, err := s.db.LookupTxn(ctx, txn.UserID, txn.DeviceID, txn.TxnID); err == nil {
			return id.EventID(evID), nil
		}
	}
	if _, err := RoomVersion(ctx, s.db, roomID); errors.Is(err, ErrUnknownRoom) {
		return "", Forbidden("You are not in this room")
	} else if err != nil {
		return "", err
	}
	target, err := s.db.GetEvent(ctx, string(eventID))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	if target != nil && target.RoomID != string(roomID) {
		target = nil
	}
	evs, err := s.submit(ctx, roomID, &request{txn: txn, makers: []maker{func(rs *roomState) (*proto, error) {
		if rs.membership(sender) != "join" {
			return nil, Forbidden("You are not in this room")
		}
		if target == nil {
			// An event this server does not have (over federation it may
			// never come here): only a user with the redact level may
			// redact it, the target's sender being unknown (Synapse sends
			// such redactions too; Complement TestFederationRedactSendsWithoutEvent).
			if s.userLevel(rs, sender) < redactLevel(rs) {
				return nil, NotFound("Event not found")
			}
		} else if id.UserID(target.Sender) != sender && s.userLevel(rs, sender) < redactLevel(rs) {
			// Redacting someone else's event needs the redact power level.
			return nil, Forbidden("You do not have permission to redact this event")
		}
		content := map[string]any{}
		if reason != "" {
			content["reason"] = reason
		}
		p := &proto{Type: "m.room.redaction", Sender: sender}
		// From v11 the target is content.redacts. The top-level redacts is
		// kept there too, as Synapse sends it: servers built before v11
		// (Dendrite 0.13.8) read only that one. It is covered by the
		// content hash and not part of the redacted form, so it changes
		// nothing for servers that follow v11.
		p.Redacts = eventID
		if rs.version.RedactsInContent() {
			content["redacts"] = eventID
		}
		p.Content = MustJSON(content)
		return p, nil
	}}})
	if err != nil {
		return "", err
	}
	return evs[len(evs)-1].ID, nil
}

// txnScope is the key under which a transaction ID is remembered: the spec
// scopes a transaction ID to a device and an endpoint path, so the same ID
// on another room (or event type, or redacted event) is another request.
// A JSON list keeps the parts apart whatever they contain.
func txnScope(endpoint string, params ...string) string {
	return string(MustJSON(append([]string{endpoint}, params...)))
}

// sameContent compares two event contents as canonical JSON.
func sameContent(a, b []byte) bool {
	ca, err1 := canonicaljson.CanonicalJSON(a)
	cb, err2 := canonicaljson.CanonicalJSON(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca, cb)
}
