package roomserver

import (
	"encoding/json"

	"maunium.net/go/mautrix/id"
)

// StrippedState is an event as stripped state (invites, knocks, room previews).
type StrippedState struct {
	Content  json.RawMessage `json:"content"`
	Sender   id.UserID       `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// Stripped returns the stripped form of a state event.
func (e *Event) Stripped() StrippedState {
	sk := ""
	if e.PDU.StateKey != nil {
		sk = *e.PDU.StateKey
	}
	return StrippedState{Content: json.RawMessage(e.PDU.Content), Sender: e.PDU.Sender, StateKey: sk, Type: e.PDU.Type}
}
