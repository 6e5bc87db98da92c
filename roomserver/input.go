package roomserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/roomserver/authrules"
	"github.com/myelin-chat/myelin/storage"
)

// maxPrevEvents caps how many forward extremities a new event references.
const maxPrevEvents = 10

// applyLocal builds, authorizes and stages the events of a local request.
func (s *Server) applyLocal(ctx context.Context, w *worker, b *batchWrite, req *request) ([]*Event, error) {
	if req.txn != nil {
		if evID, ok := b.txns[txnKey(req.txn)]; ok {
			for _, e := range b.events {
				if e.ID == evID {
					return []*Event{e}, nil
				}
			}
		}
		if _, evID, err := s.db.LookupTxn(ctx, req.txn.UserID, req.txn.DeviceID, req.txn.TxnID); err == nil {
			se, err := s.db.GetEvent(ctx, evID)
			if err != nil {
				return nil, err
			}
			e, err := eventFromStored(w.state.version, se)
			if err != nil {
				return nil, err
			}
			return []*Event{e}, nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
	}
	var out []*Event
	if c := req.create; c != nil {
		if err := authrules.Authorize(c.Version, c.PDU, nil, nil, s.getKey); err != nil {
			return nil, Forbidden("Create event not allowed: %w", err)
		}
		rs := &roomState{id: c.RoomID, version: c.Version, state: map[pdu.StateKey]*Event{}, creator: c.PDU.Sender}
		w.state = rs
		b.addEvent(rs, c, 0, false)
		out = append(out, c)
	}
	for _, mk := range req.makers {
		rs := w.state
		p, err := mk(rs)
		if err != nil {
			return nil, err
		}
		ev, err := s.buildAndAuthorize(rs, p)
		if err != nil {
			return nil, err
		}
		if err := s.applyRedaction(ctx, rs, b, ev); err != nil {
			return nil, err
		}
		b.addEvent(rs, ev, rs.snapshot, false)
		out = append(out, ev)
	}
	if req.txn != nil && len(out) > 0 {
		t := *req.txn
		t.EventID = string(out[len(out)-1].ID)
		t.RoomID = string(w.roomID)
		b.txns[txnKey(&t)] = out[len(out)-1].ID
		if b.txnFor == nil {
			b.txnFor = map[id.EventID]*storage.TxnRecord{}
		}
		b.txnFor[out[len(out)-1].ID] = &t
	}
	return out, nil
}

// buildAndAuthorize turns a proto into a signed event on top of the room's
// forward extremities, with auth events from the current state, and checks
// it against the auth rules. Local events extend every extremity, so the
// state before them is the current state.
func (s *Server) buildAndAuthorize(rs *roomState, p *proto) (*Event, error) {
	if p.StateKey != nil && len(*p.StateKey) > MaxFieldBytes {
		return nil, BadJSON("State key exceeds %d bytes", MaxFieldBytes)
	}
	if len(p.Type) > MaxFieldBytes {
		return nil, BadJSON("Event type exceeds %d bytes", MaxFieldBytes)
	}
	if len(p.Content) > MaxPDUBytes {
		return nil, TooLarge("Event exceeds %d bytes", MaxPDUBytes)
	}
	ts := p.TS
	if ts == 0 {
		ts = time.Now().UnixMilli()
	}
	var prev []ref
	for i, x := range rs.extremities {
		if i == maxPrevEvents {
			break
		}
		prev = append(prev, ref{x.ID, x.PDU.Hashes})
	}
	sel := (&pdu.PDU{Type: p.Type, StateKey: p.StateKey, Sender: p.Sender, Content: jsonValue(p.Content)}).AuthEventSelection(rs.version)
	var auth []ref
	authByID := map[id.EventID]*pdu.PDU{}
	for _, k := range sel {
		if e := rs.state[k]; e != nil {
			auth = append(auth, ref{e.ID, e.PDU.Hashes})
			authByID[e.ID] = e.PDU
		}
	}
	if c := rs.get("m.room.create", ""); c != nil {
		authByID[c.ID] = c.PDU
	}
	depth := rs.depth + 1
	ev, err := s.buildEvent(rs.version, rs.id, p, prev, auth, depth, ts)
	if err != nil {
		return nil, err
	}
	if err := checkSize(ev); err != nil {
		return nil, err
	}
	getEvents := func(ids []id.EventID) ([]*pdu.PDU, error) {
		out := make([]*pdu.PDU, 0, len(ids))
		for _, i := range ids {
			if e, ok := authByID[i]; ok {
				out = append(out, e)
			} else if len(ids) > 1 {
				out = append(out, nil)
			}
		}
		return out, nil
	}
	if err := authrules.Authorize(rs.version, ev.PDU, nil, getEvents, s.getKey); err != nil {
		return nil, authError(err)
	}
	return ev, nil
}

// authError turns an auth rule failure into the client's M_FORBIDDEN. A
// panic in the rules is a rejection too; its details stay in the log.
func authError(err error) error {
	var afe eventauth.AuthFailError
	if errors.As(err, &afe) {
		return Forbidden("%w", afe)
	}
	var pe *recovery.PanicError
	if errors.As(err, &pe) {
		return Forbidden("Event not allowed by the auth rules")
	}
	return Forbidden("Event not allowed: %w", err)
}

// getKey resolves signing keys for the auth rules: ours directly, others
// through the injected key getter.
func (s *Server) getKey(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
	if serverName == s.serverName && keyID == s.key.ID {
		return s.key.Pub, time.Now().Add(24 * time.Hour), nil
	}
	if s.keys == nil {
		return "", time.Time{}, fmt.Errorf("no key getter for %s", serverName)
	}
	return s.keys.GetKey(serverName, keyID, minValidUntil)
}

// redactsOf returns the target of a redaction event.
func redactsOf(e *Event) id.EventID {
	if e.PDU.Type != "m.room.redaction" {
		return ""
	}
	// From v11 the target is content.redacts; a top-level redacts (which we
	// also send, as Synapse does, for servers that read only that) is not
	// authoritative there.
	if e.Version.RedactsInContent() || e.PDU.Redacts == nil {
		return id.EventID(gjson.GetBytes(e.PDU.Content, "redacts").Str)
	}
	return *e.PDU.Redacts
}

// applyRedaction redacts the target of a redaction event in the same batch,
// when the redaction is allowed to take effect.
func (s *Server) applyRedaction(ctx context.Context, rs *roomState, b *batchWrite, ev *Event) error {
	target := redactsOf(ev)
	if target == "" {
		return nil
	}
	var t *Event
	for _, e := range b.events {
		if e.ID == target {
			t = e
		}
	}
	if t == nil {
		se, err := s.db.GetEvent(ctx, string(target))
		if errors.Is(err, storage.ErrNotFound) {
			return nil // unknown target: the redaction is stored and applies if the target arrives
		}
		if err != nil {
			return err
		}
		if se.RoomID != string(rs.id) || se.RedactedBy != "" {
			return nil
		}
		if t, err = eventFromStored(rs.version, se); err != nil {
			return err
		}
	}
	if t.RedactedBy != "" {
		return nil
	}
	// The redaction takes effect when the sender may redact others' events or
	// the target comes from the same server (spec: "Redactions").
	if t.PDU.Sender.Homeserver() != ev.PDU.Sender.Homeserver() && s.userLevel(rs, ev.PDU.Sender) < redactLevel(rs) {
		return nil
	}
	red, err := redactedEvent(t)
	if err != nil {
		return fmt.Errorf("redacting %s: %w", t.ID, err)
	}
	red.RedactedBy = string(ev.ID)
	b.write.Redactions = append(b.write.Redactions, storage.Redaction{EventID: string(t.ID), RedactedBy: string(ev.ID), RedactedJSON: red.JSON})
	// Keep the cached state (auth uses the redacted content) and staged rows in step.
	for _, e := range b.events {
		if e.ID == t.ID {
			e.PDU, e.JSON, e.RedactedBy = red.PDU, red.JSON, red.RedactedBy
		}
	}
	if t.IsState() {
		if cur := rs.state[t.Key()]; cur != nil && cur.ID == t.ID {
			cur.PDU, cur.JSON, cur.RedactedBy = red.PDU, red.JSON, red.RedactedBy
		}
	}
	return nil
}

// ---- power levels ----

func (s *Server) powerLevels(rs *roomState) *event.PowerLevelsEventContent {
	if e := rs.get("m.room.power_levels", ""); e != nil {
		return parsePowerLevels(rs.version, e.PDU.Content)
	}
	pl := &event.PowerLevelsEventContent{}
	// No power levels: the creator has 100, everyone else 0 (auth rules).
	pl.Users = map[id.UserID]int{}
	if c := rs.get("m.room.create", ""); c != nil {
		pl.Users[c.PDU.Sender] = 100
	}
	return pl
}

// creators are the room's creators (room v12: unlimited power).
func creators(rs *roomState) []id.UserID {
	c := rs.get("m.room.create", "")
	if c == nil {
		return nil
	}
	out := []id.UserID{c.PDU.Sender}
	for _, u := range gjson.GetBytes(c.PDU.Content, "additional_creators").Array() {
		out = append(out, id.UserID(u.Str))
	}
	return out
}

func (s *Server) userLevel(rs *roomState, u id.UserID) int {
	if rs.version.PrivilegedRoomCreators() {
		for _, c := range creators(rs) {
			if c == u {
				return math.MaxInt
			}
		}
	}
	return s.powerLevels(rs).GetUserLevel(u)
}

func redactLevel(rs *roomState) int {
	if e := rs.get("m.room.power_levels", ""); e != nil {
		return parsePowerLevels(rs.version, e.PDU.Content).Redact()
	}
	return 50
}
