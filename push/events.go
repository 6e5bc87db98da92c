package push

import (
	"encoding/json"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/storage"
)

// clientKeys are the PDU keys the client-server event format keeps.
var clientKeys = []string{"content", "origin_server_ts", "room_id", "sender", "state_key", "type", "redacts"}

// ClientEvent converts a stored PDU to the client-server event format
// (ClientEvent) for the device deviceID of userID: the federation-only keys
// dropped, event_id added, and the unsigned data the spec describes built by
// this server (never copied from the PDU): age; replaces_state and
// prev_content (when the caller filled e.PrevContent, i.e. the user may see
// the replaced event); membership (when the caller filled e.Membership, the
// user's membership at the event); transaction_id when that device sent the event. A
// malformed stored PDU yields nil.
func ClientEvent(e storage.SyncEvent, userID, deviceID string) json.RawMessage {
	var pdu map[string]json.RawMessage
	if err := json.Unmarshal([]byte(e.JSON), &pdu); err != nil {
		return nil
	}
	out := make(map[string]json.RawMessage, len(clientKeys)+2)
	for _, k := range clientKeys {
		if v, ok := pdu[k]; ok {
			out[k] = v
		}
	}
	// Room v11 moved redacts into content; clients still read it at the top.
	if _, ok := out["redacts"]; !ok && e.Type == "m.room.redaction" {
		var c struct {
			Redacts json.RawMessage `json:"redacts"`
		}
		if json.Unmarshal(pdu["content"], &c) == nil && len(c.Redacts) > 0 {
			out["redacts"] = c.Redacts
		}
	}
	id, _ := json.Marshal(e.EventID)
	out["event_id"] = id
	unsigned := map[string]any{"age": max(time.Now().UnixMilli()-e.TS, 0)}
	if e.ReplacesState != "" {
		unsigned["replaces_state"] = e.ReplacesState
		if len(e.PrevContent) > 0 {
			unsigned["prev_content"] = e.PrevContent
		}
	}
	if e.Membership != "" {
		unsigned["membership"] = e.Membership
	}
	if e.TxnID != "" && deviceID != "" && e.Sender == userID && e.TxnDevice == deviceID {
		unsigned["transaction_id"] = e.TxnID
	}
	out["unsigned"], _ = json.Marshal(unsigned)
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

// ParseEvent decodes a stored event for push rule evaluation.
func ParseEvent(e storage.SyncEvent) *event.Event {
	raw := ClientEvent(e, "", "")
	if raw == nil {
		return nil
	}
	var ev event.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil
	}
	if ev.Content.Raw == nil {
		ev.Content.Raw = map[string]any{}
		_ = json.Unmarshal(ev.Content.VeryRaw, &ev.Content.Raw)
	}
	return &ev
}
