package federationsender

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/storage"
)

// Residency is the data-localization policy as the sender asks it
// (*residency.Policy): may a server have a room's events or EDUs, or a kind
// of data whatever the room. Both answers are cheap (the room's and the
// server's zones are cached by the policy).
type Residency interface {
	Room(ctx context.Context, roomID, server string, kind residency.Kind) residency.Decision
	Server(ctx context.Context, server string, kind residency.Kind) residency.Decision
}

// roomDecisions caches the policy's answers for one page of the stream or
// one transaction: a room's events are decided once per destination.
type roomDecisions struct {
	r     Residency
	cache map[[2]string]residency.Decision
}

func (c *roomDecisions) decide(ctx context.Context, roomID, dest string) residency.Decision {
	k := [2]string{roomID, dest}
	if d, ok := c.cache[k]; ok {
		return d
	}
	if c.cache == nil {
		c.cache = map[[2]string]residency.Decision{}
	}
	d := c.r.Room(ctx, roomID, dest, residency.Events)
	c.cache[k] = d
	return d
}

// residencyRefusals aggregates what the residency policy kept from each
// destination at one decision point (a page of the stream, a transaction,
// a QueueEDU call): one refusal record per destination, the first refusing
// decision's rule and reason, the PDUs counted per room.
type residencyRefusals map[string]*residencyRefusal

type residencyRefusal struct {
	d     residency.Decision
	kind  residency.Kind
	room  string         // the room an EDU refused was about
	rooms map[string]int // PDUs refused per room
	edus  map[string]int
}

func (r residencyRefusals) add(dest, roomID string, d residency.Decision, kind residency.Kind) *residencyRefusal {
	rr := r[dest]
	if rr == nil {
		rr = &residencyRefusal{d: d, kind: kind}
		r[dest] = rr
	}
	if roomID != "" {
		if rr.rooms == nil {
			rr.rooms = map[string]int{}
		}
		rr.rooms[roomID]++
	}
	return rr
}

// record queues one refusal record per destination (nothing when a is nil).
func (r residencyRefusals) record(a Audit, ourServer string, droppedPDUs bool) {
	if a == nil {
		return
	}
	for dest, rr := range r {
		room := rr.room
		if len(rr.rooms) == 1 {
			for room = range rr.rooms {
			}
		}
		rec := audit.ResidencyRefusal(rr.d, audit.Outbound, dest, string(federation.PurposeSend), rr.kind, room)
		rec.Rooms, rec.EDUs = rr.rooms, rr.edus
		if droppedPDUs {
			for _, n := range rr.rooms {
				rec.DroppedPDUs += int64(n)
			}
		}
		a.Refusal(ourServer, rec)
	}
}

// admitted is the part of a transaction's PDUs the residency policy still
// lets dest have, decided again when the transaction is built: the trust
// list may have changed since they were queued (a partner removed is cut
// off). What it keeps back is recorded as one refusal for the transaction.
func (s *Sender) admitted(ctx context.Context, dest string, batch []storage.FederationQueueItem) []storage.FederationQueueItem {
	if s.opts.Residency == nil || len(batch) == 0 {
		return batch
	}
	decisions := roomDecisions{r: s.opts.Residency}
	refused := residencyRefusals{}
	var out []storage.FederationQueueItem // nil until something is refused
	for i, it := range batch {
		if d := decisions.decide(ctx, it.RoomID, dest); !d.Allowed {
			if out == nil {
				out = append(make([]storage.FederationQueueItem, 0, len(batch)), batch[:i]...)
			}
			refused.add(dest, it.RoomID, d, residency.Events)
			continue
		}
		if out != nil {
			out = append(out, it)
		}
	}
	if out == nil {
		return batch // the common case: nothing copied
	}
	s.metrics.residencyWithheld.WithLabelValues("txn").Add(float64(len(batch) - len(out)))
	refused.record(s.opts.Audit, s.opts.ServerName, true)
	return out
}

// admittedEDUs is the part of a transaction's EDUs the residency policy
// still lets dest have, decided again as the PDUs are (admitted): an EDU
// queued for a destination that the trust list has since moved out of its
// rooms' zones is not sent (it is acknowledged with the transaction). What
// it keeps back is one refusal record for the transaction.
func (s *Sender) admittedEDUs(ctx context.Context, dest string, edus []storage.FederationEDU) []storage.FederationEDU {
	if s.opts.Residency == nil || len(edus) == 0 {
		return edus
	}
	refused := residencyRefusals{}
	var out []storage.FederationEDU // nil until something is refused
	for i, e := range edus {
		rooms, roomEDU, _ := eduRooms(e.Type, e.Content)
		if d := eduDecision(ctx, s.opts.Residency, dest, e.Type, rooms, roomEDU); !d.Allowed {
			if out == nil {
				out = append(make([]storage.FederationEDU, 0, len(edus)), edus[:i]...)
			}
			kind := eduKind(e.Type)
			if kind == "" {
				kind = residency.Events
			}
			rr := refused.add(dest, "", d, kind)
			if rr.edus == nil {
				rr.edus = map[string]int{}
			}
			rr.edus[e.Type]++
			if len(rooms) == 1 && rr.room == "" {
				rr.room = rooms[0]
			}
			continue
		}
		if out != nil {
			out = append(out, e)
		}
	}
	if out == nil {
		return edus
	}
	if s.opts.EDUs != nil { // myelin_federation_edus_dropped_total{reason="residency"}
		s.opts.EDUs.dropped.WithLabelValues("residency").Add(float64(len(edus) - len(out)))
	}
	refused.record(s.opts.Audit, s.opts.ServerName, false)
	return out
}

// eduKind is the data kind of an EDU type ("" for one the policy has no
// kind for: decided by the server's zone alone, as events).
func eduKind(eduType string) residency.Kind {
	switch eduType {
	case "m.typing":
		return residency.Typing
	case "m.receipt":
		return residency.Receipts
	case "m.presence":
		return residency.Presence
	case "m.direct_to_device":
		return residency.ToDevice
	case "m.device_list_update", "m.signing_key_update":
		return residency.DeviceKeys
	}
	return ""
}

// eduRooms are the rooms an EDU belongs to: m.typing's room_id, the rooms
// keying m.receipt's content; none for the other types. ok is false for a
// room EDU naming no room (refused: nothing to decide by).
func eduRooms(eduType string, content json.RawMessage) (rooms []string, roomEDU, ok bool) {
	switch eduType {
	case "m.typing":
		r := gjson.GetBytes(content, "room_id")
		if r.Type != gjson.String || r.Str == "" {
			return nil, true, false
		}
		return []string{r.Str}, true, true
	case "m.receipt":
		gjson.ParseBytes(content).ForEach(func(k, _ gjson.Result) bool {
			rooms = append(rooms, k.Str)
			return true
		})
		return rooms, true, len(rooms) > 0
	}
	return nil, false, true
}

// eduDecision decides whether dest may have an EDU of eduType about rooms:
// every room must admit it (Room with the EDU's kind), or, for an EDU of no
// room, the server's zone must share the kind.
func eduDecision(ctx context.Context, r Residency, dest, eduType string, rooms []string, roomEDU bool) residency.Decision {
	kind := eduKind(eduType)
	if kind == "" {
		kind = residency.Events
	}
	if !roomEDU {
		return r.Server(ctx, dest, kind)
	}
	if len(rooms) == 0 {
		return residency.Decision{Rule: "residency.unknown_room",
			Reason: "the " + eduType + " EDU names no room, so the data-localization policy cannot admit it"}
	}
	var d residency.Decision
	for _, room := range rooms {
		if d = r.Room(ctx, room, dest, kind); !d.Allowed {
			return d
		}
	}
	return d
}

// pageResidency is the residency policy's part in handling one page of the
// stream: decisions cached per room and destination, refusals aggregated
// per destination.
type pageResidency struct {
	decisions roomDecisions
	refused   residencyRefusals
	withheld  int
}

// admits reports whether dest may have roomID's events (always, with no
// policy), counting a refusal.
func (p *pageResidency) admits(ctx context.Context, roomID, dest string) bool {
	if p.decisions.r == nil {
		return true
	}
	d := p.decisions.decide(ctx, roomID, dest)
	if !d.Allowed {
		p.refused.add(dest, roomID, d, residency.Events)
		p.withheld++
	}
	return d.Allowed
}

func (p *pageResidency) record(s *Sender) {
	if p.withheld == 0 {
		return
	}
	s.metrics.residencyWithheld.WithLabelValues("queue").Add(float64(p.withheld))
	p.refused.record(s.opts.Audit, s.opts.ServerName, false)
}
