package roomserver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/authrules"
)

// Events received together whose place in the DAG is not (fully) known: a
// send_join answer (ImportJoin) or the state fetched for a gap
// (InputWithState). Nothing is taken on trust: each event is parsed in the
// room's version, must be of the room, within the size limits and signed by
// its sender's server (a content hash mismatch keeps the redacted form), and
// is accepted only when authorized by its own auth events, which must be
// accepted themselves (depth-first, cycles refused).

// parseReceived parses and checks one received event of roomID.
func (s *Server) parseReceived(version id.RoomVersion, roomID id.RoomID, raw []byte) (*Event, error) {
	return s.parseReceivedWith(version, roomID, raw, s.getKey)
}

// parseReceivedWith is parseReceived with the signing keys from getKey. A
// signature that cannot be verified (its server's key unavailable, or the
// signature wrong) is an *unverifiedError (ErrForbidden), which an import may
// choose to skip rather than fail on.
func (s *Server) parseReceivedWith(version id.RoomVersion, roomID id.RoomID, raw []byte, getKey pdu.GetKeyFunc) (*Event, error) {
	ev, err := parseEvent(version, "", raw)
	if err != nil {
		return nil, BadJSON("Invalid event: %v", err)
	}
	if ev.RoomID != roomID {
		return nil, BadJSON("Event %s is not of room %s", ev.ID, roomID)
	}
	if err := checkSize(ev); err != nil {
		return nil, err
	}
	if err := verifySignatureWith(ev, getKey); err != nil {
		return nil, &unverifiedError{ev: ev, err: Forbidden("Event %s: %v", ev.ID, err)}
	}
	if !verifyContentHash(ev) {
		if ev, err = redactedEvent(ev); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// unverifiedError is a received event whose sender's server's signature could
// not be verified; it wraps the ErrForbidden answered when it is not skipped.
type unverifiedError struct {
	ev  *Event
	err error
}

func (e *unverifiedError) Error() string { return e.err.Error() }
func (e *unverifiedError) Unwrap() error { return e.err }

// verifySignatureWith checks the signature of ev's sender's server with the
// keys of getKey (verifySignature with the server's own key lookup).
func verifySignatureWith(ev *Event, getKey pdu.GetKeyFunc) error {
	server := ev.PDU.Sender.Homeserver()
	if ev.Version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(ev.JSON, &v1); err != nil {
			return err
		}
		return v1.VerifySignature(ev.Version, server, getKey)
	}
	return ev.PDU.VerifySignature(ev.Version, server, getKey)
}

// Skipping what cannot be verified (ImportJoin). In a large room some
// member's server is always offline: failing a whole send_join answer for
// one event whose key cannot be fetched would make such rooms unjoinable.
// As Synapse does, such events are left out, like unauthorized ones; what
// needs them as auth events then fails auth, and the join itself still
// requires the create event and its own auth events. A wrong signature (key
// found, signature not matching) is left out the same way rather than
// failing the import: it gives a hostile resident server nothing it does
// not already have by omitting events, and an honest one may relay events of
// a server that since lost its key and made a new one under the same key ID.

// NotaryKeyGetter is a KeyGetter that can also ask a given server as a
// notary (POST /_matrix/key/v2/query, its answer checked as any notary's)
// when a key cannot be fetched otherwise: the federation key fetcher.
type NotaryKeyGetter interface {
	GetKeyVia(ctx context.Context, notary, serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error)
}

type keyNotaryKey struct{}

// WithKeyNotary marks ctx as a join through server (remotejoin): the keys
// its import cannot fetch from their owners are asked of server as a
// notary, when the key getter is a NotaryKeyGetter.
func WithKeyNotary(ctx context.Context, server string) context.Context {
	return context.WithValue(ctx, keyNotaryKey{}, server)
}

func keyNotaryOf(ctx context.Context) string {
	s, _ := ctx.Value(keyNotaryKey{}).(string)
	return s
}

// Bounds of one import's key lookups: servers asked at once, and how many
// keys may fail before the rest are not asked at all (a hostile answer
// naming many unreachable servers must not cost one fetch timeout each).
const (
	importKeyWorkers     = 8
	maxImportKeyFailures = 100
)

// importKeyring is the key lookup of one import: through ctx's notary when
// there is one, and each (server, key ID) asked once per demanded validity,
// so that a server that is down costs one failed lookup, not one per event
// it sent.
type importKeyring struct {
	s      *Server
	ctx    context.Context
	notary string
	nk     NotaryKeyGetter

	mu       sync.Mutex
	seen     map[string]keyResult
	failures int
}

type keyResult struct {
	key          id.SigningKey
	until, asked time.Time
	err          error
}

// importKeys is the key lookup of an import of the given events, whose
// signing keys are fetched first, importKeyWorkers at a time.
func (s *Server) importKeys(ctx context.Context, lists ...[]json.RawMessage) pdu.GetKeyFunc {
	kr := &importKeyring{s: s, ctx: ctx, notary: keyNotaryOf(ctx), seen: map[string]keyResult{}}
	kr.nk, _ = s.keys.(NotaryKeyGetter)
	kr.prefetch(lists)
	return kr.get
}

func (kr *importKeyring) get(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
	k := serverName + "\x00" + string(keyID)
	kr.mu.Lock()
	if r, ok := kr.seen[k]; ok && (r.err != nil || !r.until.Before(minValidUntil) || !r.asked.Before(minValidUntil)) {
		kr.mu.Unlock()
		return r.key, r.until, r.err
	}
	if kr.failures >= maxImportKeyFailures {
		kr.mu.Unlock()
		return "", time.Time{}, fmt.Errorf("key %s of %s not asked: more than %d keys of this room's servers are unavailable", keyID, serverName, maxImportKeyFailures)
	}
	kr.mu.Unlock()
	var r keyResult
	if kr.nk != nil && kr.notary != "" && serverName != kr.s.serverName {
		r.key, r.until, r.err = kr.nk.GetKeyVia(kr.ctx, kr.notary, serverName, keyID, minValidUntil)
	} else {
		r.key, r.until, r.err = kr.s.getKey(serverName, keyID, minValidUntil)
	}
	r.asked = minValidUntil
	kr.mu.Lock()
	kr.seen[k] = r
	if r.err != nil {
		kr.failures++
	}
	kr.mu.Unlock()
	return r.key, r.until, r.err
}

// prefetch looks up, concurrently, the keys the events' senders' servers
// signed them with (for the latest of their events), so that the checks
// that follow find them answered.
func (kr *importKeyring) prefetch(lists [][]json.RawMessage) {
	type want struct {
		server string
		keyID  id.KeyID
		ts     int64
	}
	wants := map[string]*want{}
	for _, list := range lists {
		for _, raw := range list {
			server := id.UserID(gjson.GetBytes(raw, "sender").Str).Homeserver()
			if server == "" || server == kr.s.serverName {
				continue
			}
			ts := gjson.GetBytes(raw, "origin_server_ts").Int()
			gjson.GetBytes(raw, "signatures."+gjson.Escape(server)).ForEach(func(keyID, _ gjson.Result) bool {
				k := server + "\x00" + keyID.Str
				if w := wants[k]; w != nil {
					w.ts = max(w.ts, ts)
				} else if len(wants) < MaxImportEvents {
					wants[k] = &want{server, id.KeyID(keyID.Str), ts}
				}
				return true
			})
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, importKeyWorkers)
	for _, w := range wants {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, _, _ = kr.get(w.server, w.keyID, time.UnixMilli(w.ts))
		}()
	}
	wg.Wait()
}

// unverifiedEvents are the events an import left out for their signatures.
type unverifiedEvents struct {
	byID map[id.EventID]*unverifiedError
}

// skip reports whether err is an unverified signature, recording the event.
func (u *unverifiedEvents) skip(err error) bool {
	var ue *unverifiedError
	if !errors.As(err, &ue) {
		return false
	}
	if u.byID == nil {
		u.byID = map[id.EventID]*unverifiedError{}
	}
	u.byID[ue.ev.ID] = ue
	return true
}

// noCreate is the refusal of a state without a (verified) create event.
func (u *unverifiedEvents) noCreate() error {
	for _, ue := range u.byID {
		if ue.ev.PDU.Type == "m.room.create" && ue.ev.PDU.StateKey != nil && *ue.ev.PDU.StateKey == "" {
			return Forbidden("The create event cannot be verified: %v", ue.err)
		}
	}
	return Forbidden("The state has no m.room.create event")
}

// log notes what was left out (at most a few event IDs, with the count).
func (u *unverifiedEvents) log(roomID id.RoomID) {
	if len(u.byID) == 0 {
		return
	}
	var sample []string
	servers := map[string]bool{}
	for _, ue := range u.byID {
		servers[ue.ev.PDU.Sender.Homeserver()] = true
		if len(sample) < 5 {
			sample = append(sample, ue.err.Error())
		}
	}
	slog.Warn("import: events whose signatures cannot be verified left out", "room", roomID, "count", len(u.byID),
		"servers", len(servers), "sample", sample)
}

// eventSet authorizes received events against their own auth events.
type eventSet struct {
	s       *Server
	version id.RoomVersion
	byID    map[id.EventID]*Event // received, parsed
	// stored: events already stored (accepted when they were), usable as
	// auth events; nil for a room not known yet.
	stored   map[id.EventID]*Event
	ok       map[id.EventID]bool
	visiting map[id.EventID]bool
	ordered  []*Event // accepted, each after its auth events
}

func (s *Server) newEventSet(version id.RoomVersion) *eventSet {
	return &eventSet{s: s, version: version, byID: map[id.EventID]*Event{}, ok: map[id.EventID]bool{}, visiting: map[id.EventID]bool{}}
}

// authEvent is an accepted (or stored) auth event by ID.
func (es *eventSet) authEvent(x id.EventID) *pdu.PDU {
	if es.ok[x] {
		return es.byID[x].PDU
	}
	if e := es.stored[x]; e != nil {
		return e.PDU
	}
	return nil
}

func (es *eventSet) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, 0, len(ids))
	for _, x := range ids {
		p := es.authEvent(x)
		if p == nil {
			if len(ids) == 1 {
				continue
			}
			return nil, fmt.Errorf("auth event %s is missing or rejected", x)
		}
		out = append(out, p)
	}
	return out, nil
}

// visit accepts e when its auth events (visited first) allow it.
func (es *eventSet) visit(e *Event, depth int) bool {
	if es.ok[e.ID] {
		return true
	}
	if es.visiting[e.ID] || depth > MaxImportEvents {
		return false // a cycle, or rejected already
	}
	es.visiting[e.ID] = true
	for _, a := range e.PDU.AuthEvents {
		if ae := es.byID[a]; ae != nil {
			es.visit(ae, depth+1)
		}
	}
	if authrules.Authorize(es.version, e.PDU, nil, es.getEvents, es.s.getKey) != nil {
		return false
	}
	es.ok[e.ID] = true
	es.ordered = append(es.ordered, e)
	return true
}

// missingAuth lists the auth events the received events name that are
// neither received nor in stored: the store is asked for them.
func (es *eventSet) missingAuth() []string {
	seen := map[id.EventID]bool{}
	var out []string
	for _, e := range es.byID {
		for _, a := range e.PDU.AuthEvents {
			if es.byID[a] == nil && es.stored[a] == nil && !seen[a] {
				seen[a] = true
				out = append(out, string(a))
			}
		}
	}
	return out
}
