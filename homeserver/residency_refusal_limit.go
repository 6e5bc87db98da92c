package homeserver

import (
	"sync"
	"time"

	"github.com/myelin-chat/myelin/audit"
)

// peerRefusals is the audit trail as the handlers of other servers'
// requests and transactions record their refusals to it (federationapi,
// ingest, media served over federation): a peer asking again and again for
// what it may not have would otherwise write one record per request. The
// same refusal (server, purpose, rule, room, reason: a media refusal's
// names the item) is recorded once a minute; a server gets at most
// maxPeerRefusalsPerServer distinct ones a minute (the room is as its
// request names it), so that one peer cannot use up the others' records,
// and all servers together maxPeerRefusalsPerMinute. What is left
// unrecorded is still counted (myelin_residency_decisions_total). Flows
// pass through.
type peerRefusals struct {
	*audit.Log
	w *refusalWindow
}

const (
	maxPeerRefusalsPerServer = 20
	maxPeerRefusalsPerMinute = 2000
)

type refusalWindow struct {
	now      func() time.Time
	mu       sync.Mutex
	start    time.Time
	seen     map[string]bool
	byServer map[string]int
}

func newPeerRefusals(log *audit.Log) peerRefusals {
	return peerRefusals{Log: log, w: &refusalWindow{now: time.Now}}
}

// Refusal records r unless the same refusal was recorded this minute, or
// its server's (or everyone's) share of the minute is used up.
func (p peerRefusals) Refusal(actor string, r audit.Refusal) {
	if !p.w.first(r.Server, r.Direction+" "+r.Server+" "+r.Purpose+" "+r.Rule+" "+r.Room+" "+r.Reason) {
		return
	}
	p.Log.Refusal(actor, r)
}

func (w *refusalWindow) first(server, key string) bool {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.start) >= time.Minute || w.seen == nil {
		w.start, w.seen, w.byServer = now, map[string]bool{}, map[string]int{}
	}
	if w.seen[key] || w.byServer[server] >= maxPeerRefusalsPerServer || len(w.seen) >= maxPeerRefusalsPerMinute {
		return false
	}
	w.seen[key] = true
	w.byServer[server]++
	return true
}
