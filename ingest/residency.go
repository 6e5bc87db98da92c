package ingest

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/residency"
)

// Residency is the data-localization policy as ingest asks it
// (residency.Policy): whether the origin may send us a room's events, its
// typing notices and receipts, and the data of kinds that belong to no room
// (presence, to-device messages, device lists).
type Residency interface {
	Room(ctx context.Context, roomID, server string, kind residency.Kind) residency.Decision
	Server(ctx context.Context, server string, kind residency.Kind) residency.Decision
}

// purposeSend names /send in refusal records.
const purposeSend = "send"

// txnPolicy asks the policy for one transaction: each question once (a
// transaction of 50 PDUs of one room asks about the room once), and what was
// refused aggregated into one refusal record.
type txnPolicy struct {
	p      Residency
	origin string

	mu      sync.Mutex
	asked   map[[2]string]residency.Decision // (room or "", kind)
	first   residency.Decision               // the first refusal
	kind    residency.Kind
	room    string
	rooms   map[string]int // PDUs refused per room
	edus    map[string]int // EDUs (or receipt rooms) refused per type
	refused bool
}

func (e *Engine) newTxnPolicy(origin string) *txnPolicy {
	if e.o.Residency == nil {
		return nil
	}
	return &txnPolicy{p: e.o.Residency, origin: origin, asked: map[[2]string]residency.Decision{}}
}

func (t *txnPolicy) decide(ctx context.Context, roomID string, kind residency.Kind) residency.Decision {
	key := [2]string{roomID, string(kind)}
	t.mu.Lock()
	d, ok := t.asked[key]
	t.mu.Unlock()
	if ok {
		return d
	}
	if roomID == "" {
		d = t.p.Server(ctx, t.origin, kind)
	} else {
		d = t.p.Room(ctx, roomID, t.origin, kind)
	}
	t.mu.Lock()
	t.asked[key] = d
	t.mu.Unlock()
	return d
}

// note counts a refusal: a PDU of roomID, or an EDU of eduType.
func (t *txnPolicy) note(d residency.Decision, kind residency.Kind, roomID, eduType string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.refused {
		t.refused, t.first, t.kind, t.room = true, d, kind, roomID
	}
	if eduType == "" {
		if t.rooms == nil {
			t.rooms = map[string]int{}
		}
		t.rooms[roomID]++
		return
	}
	if t.edus == nil {
		t.edus = map[string]int{}
	}
	t.edus[eduType]++
}

// admitPDU asks whether the origin may send us p's room's events; the
// refusal's reason is the PDU's result in the /send answer.
func (t *txnPolicy) admitPDU(ctx context.Context, p *PDU) (string, bool) {
	if t == nil {
		return "", true
	}
	d := t.decide(ctx, string(p.RoomID), residency.Events)
	if d.Allowed {
		return "", true
	}
	t.note(d, residency.Events, string(p.RoomID), "")
	reason := d.Reason
	if reason == "" {
		reason = "refused by the data-localization policy (" + d.Rule + ")"
	}
	return reason, false
}

// admitEDU is an EDU's content as the policy lets it through: unchanged,
// narrowed (a receipt EDU without the rooms refused), or dropped (false).
// EDUs have no per-item answer in /send: what is dropped is recorded.
func (t *txnPolicy) admitEDU(ctx context.Context, eduType string, content json.RawMessage) (json.RawMessage, bool) {
	if t == nil {
		return content, true
	}
	var kind residency.Kind
	switch eduType {
	case "m.typing":
		room := gjson.GetBytes(content, "room_id").Str
		return content, t.admitKind(ctx, room, residency.Typing, eduType)
	case "m.receipt":
		return t.admitReceipts(ctx, content)
	case "m.presence":
		kind = residency.Presence
	case "m.direct_to_device":
		kind = residency.ToDevice
	case "m.device_list_update", "m.signing_key_update":
		kind = residency.DeviceKeys
	default:
		return content, true
	}
	return content, t.admitKind(ctx, "", kind, eduType)
}

func (t *txnPolicy) admitKind(ctx context.Context, roomID string, kind residency.Kind, eduType string) bool {
	d := t.decide(ctx, roomID, kind)
	if !d.Allowed {
		t.note(d, kind, roomID, eduType)
	}
	return d.Allowed
}

// admitReceipts keeps the rooms of an m.receipt EDU (an object keyed by
// room ID) the origin may send receipts of.
func (t *txnPolicy) admitReceipts(ctx context.Context, content json.RawMessage) (json.RawMessage, bool) {
	var rooms map[string]json.RawMessage
	if json.Unmarshal(content, &rooms) != nil {
		return content, true // malformed: the handler answers it
	}
	dropped := 0
	for room := range rooms {
		if !t.admitKind(ctx, room, residency.Receipts, "m.receipt") {
			delete(rooms, room)
			dropped++
		}
	}
	switch {
	case dropped == 0:
		return content, true
	case len(rooms) == 0:
		return nil, false
	}
	narrowed, err := json.Marshal(rooms)
	if err != nil {
		return nil, false
	}
	return narrowed, true
}

// record writes the transaction's one refusal record, when anything was refused.
func (e *Engine) recordRefusals(t *txnPolicy) {
	if t == nil || !t.refused || e.o.Audit == nil {
		return
	}
	t.mu.Lock()
	r := audit.ResidencyRefusal(t.first, audit.Inbound, t.origin, purposeSend, t.kind, t.room)
	r.Rooms, r.EDUs = t.rooms, t.edus
	t.mu.Unlock()
	e.o.Audit.Refusal(e.serverName(), r)
}
