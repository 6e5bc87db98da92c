package homeserver

import (
	"time"

	"github.com/myelin-chat/myelin/audit"
)

// peerRefusals is the audit trail as the handlers of other servers'
// requests and transactions record their refusals to it (federationapi,
// ingest, media served over federation): a peer asking again and again for
// what it may not have would otherwise write one record per request. The
// same refusal (server, purpose, rule, room, reason: a media refusal's
// names the item) is recorded once a minute, and
// at most maxRefusedOriginsPerMinute distinct ones a minute (the room is as
// the request names it); what is left unrecorded is still counted
// (myelin_residency_decisions_total). Flows pass through.
type peerRefusals struct {
	*audit.Log
	window *inboundRefusals // its per-minute window of keys
}

func newPeerRefusals(log *audit.Log) peerRefusals {
	return peerRefusals{Log: log, window: &inboundRefusals{now: time.Now}}
}

// Refusal records r unless the same refusal was recorded this minute.
func (p peerRefusals) Refusal(actor string, r audit.Refusal) {
	if !p.window.first(r.Direction + " " + r.Server + " " + r.Purpose + " " + r.Rule + " " + r.Room + " " + r.Reason) {
		return
	}
	p.Log.Refusal(actor, r)
}
