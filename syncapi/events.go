package syncapi

import (
	"encoding/json"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/storage"
)

// clientKeys are the PDU keys the client-server event format keeps.
var clientKeys = []string{"content", "origin_server_ts", "room_id", "sender", "state_key", "type", "redacts"}

// ClientEvent converts a stored PDU to the client-server event format
// (ClientEvent): the federation-only keys dropped, event_id added and
// unsigned.age computed. A malformed stored PDU yields nil.
func ClientEvent(e storage.SyncEvent) json.RawMessage {
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
	unsigned := map[string]json.RawMessage{}
	if raw, ok := pdu["unsigned"]; ok {
		_ = json.Unmarshal(raw, &unsigned)
	}
	delete(unsigned, "age_ts")
	age, _ := json.Marshal(max(time.Now().UnixMilli()-e.TS, 0))
	unsigned["age"] = age
	out["unsigned"], _ = json.Marshal(unsigned)
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

// ParseEvent decodes a stored event for push rule evaluation.
func ParseEvent(e storage.SyncEvent) *event.Event {
	raw := ClientEvent(e)
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
