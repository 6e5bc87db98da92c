package roomserver

import (
	"encoding/json"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// ClientEvent is an event in the client-server API's format.
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        id.EventID      `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         id.RoomID       `json:"room_id,omitempty"`
	Sender         id.UserID       `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        id.EventID      `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// StrippedState is an event as stripped state (invites, knocks, room previews).
type StrippedState struct {
	Content  json.RawMessage `json:"content"`
	Sender   id.UserID       `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// Client converts the event to the client format. Redacted events are
// already stored redacted; redactedBecause, when given, is attached.
func (e *Event) Client(redactedBecause *ClientEvent) *ClientEvent {
	p := e.PDU
	ce := &ClientEvent{
		Content:        json.RawMessage(p.Content),
		EventID:        e.ID,
		OriginServerTS: p.OriginServerTS,
		RoomID:         e.RoomID,
		Sender:         p.Sender,
		StateKey:       p.StateKey,
		Type:           p.Type,
	}
	if len(ce.Content) == 0 {
		ce.Content = json.RawMessage("{}")
	}
	if p.Redacts != nil {
		ce.Redacts = *p.Redacts
	} else if p.Type == "m.room.redaction" {
		ce.Redacts = id.EventID(gjson.GetBytes(p.Content, "redacts").Str)
	}
	age := time.Now().UnixMilli() - p.OriginServerTS
	if age < 0 {
		age = 0
	}
	ce.Unsigned = map[string]any{"age": age}
	if redactedBecause != nil {
		ce.Unsigned["redacted_because"] = redactedBecause
	}
	return ce
}

// Stripped returns the stripped form of a state event.
func (e *Event) Stripped() StrippedState {
	sk := ""
	if e.PDU.StateKey != nil {
		sk = *e.PDU.StateKey
	}
	return StrippedState{Content: json.RawMessage(e.PDU.Content), Sender: e.PDU.Sender, StateKey: sk, Type: e.PDU.Type}
}
