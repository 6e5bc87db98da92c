package audit

import (
	"context"
	"slices"

	"github.com/myelin-chat/myelin/residency"
)

// Directions of a flow.
const (
	Outbound = "outbound"
	Inbound  = "inbound"
)

// Flow is one federation transaction that crossed the boundary: sent to
// Server and acknowledged with a 2xx (outbound), or received from it and
// processed (inbound); or one query another server made of us that we
// answered (Endpoint set, Direction outbound: the data left us).
type Flow struct {
	Direction string `json:"direction"`
	Server    string `json:"server"` // the destination, or the origin
	TxnID     string `json:"txn_id"`
	// Endpoint names the federation query served ("state", "backfill",
	// "query/profile", "user/keys/query", …); empty for transactions.
	Endpoint string         `json:"endpoint,omitempty"`
	Rooms    map[string]int `json:"rooms,omitempty"` // PDUs per room ID
	PDUs     int            `json:"pdus"`
	EDUs     map[string]int `json:"edus,omitempty"` // EDUs per EDU type
	// Data counts the items per data kind (DataEvents for PDUs, the EDUs'
	// kinds by DataKindOfEDU); filled by the log unless the caller did (a
	// served query counts what it answered: rooms listed, users' keys).
	Data  map[string]int `json:"data,omitempty"`
	Bytes int            `json:"bytes"` // the PDUs' and EDUs' JSON, or the media's content
	// Media is the mxc:// URI of a media item served or fetched (Data then
	// counts it under DataMedia, set by the caller).
	Media string `json:"media,omitempty"`
}

func (f *Flow) fill() {
	if len(f.Data) > 0 {
		return
	}
	f.Data = map[string]int{}
	if f.PDUs > 0 {
		f.Data[DataEvents] = f.PDUs
	}
	for t, n := range f.EDUs {
		f.Data[DataKindOfEDU(t)] += n
	}
}

func (f *Flow) dataKinds() []string {
	ks := make([]string, 0, len(f.Data))
	for k := range f.Data {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Flow queues the flow record of one transaction (Record: it does not wait
// for the store). actor is the server that sent the data: ours outbound,
// the origin inbound.
func (l *Log) Flow(actor string, f Flow) {
	f.fill()
	l.Record(Entry{Kind: KindFlow, Actor: actor, Body: f, flow: &f})
}

// Refusal is data the federation policy kept from a server, or a server it
// refused to deal with.
type Refusal struct {
	Server  string `json:"server"`
	Purpose string `json:"purpose"` // the policy question asked (federation.Purpose, or the endpoint refused)
	// Rule names what decided: "federation_policy" for the allow/deny
	// lists, the residency policy's rule names (residency.Decision.Rule).
	Rule string `json:"rule"`
	// Direction is Outbound (data we kept) or Inbound (a request or data
	// we refused); empty in records from before it was recorded.
	Direction string `json:"direction,omitempty"`
	// Kind is the data kind refused, Room the room it was about, Reason
	// the residency policy's explanation.
	Kind   string         `json:"kind,omitempty"`
	Room   string         `json:"room,omitempty"`
	Reason string         `json:"reason,omitempty"`
	Rooms  map[string]int `json:"rooms,omitempty"` // PDUs withheld per room
	EDUs   map[string]int `json:"edus,omitempty"`  // EDUs withheld per type
	// DroppedPDUs: queued PDUs dropped when the policy came to refuse a
	// destination they were queued for.
	DroppedPDUs int64 `json:"dropped_pdus,omitempty"`
}

// RuleFederationPolicy is the rule of a refusal by federation.Policy.
const RuleFederationPolicy = "federation_policy"

// ResidencyRefusal is the refusal record of a residency decision.
func ResidencyRefusal(d residency.Decision, direction, server, purpose string, kind residency.Kind, room string) Refusal {
	return Refusal{Server: server, Purpose: purpose, Rule: d.Rule, Direction: direction, Kind: string(kind), Room: room,
		Reason: d.Reason}
}

// Refusal queues a refusal record; actor is our server.
func (l *Log) Refusal(actor string, r Refusal) {
	l.Record(Entry{Kind: KindRefusal, Actor: actor, Body: r})
}

// AdminAction is something an admin endpoint or CLI command changed.
type AdminAction struct {
	Action  string         `json:"action"` // e.g. "register_user", "registration_token.create", "server_notice"
	Via     string         `json:"via"`    // "http" or "cli"
	Details map[string]any `json:"details,omitempty"`
}

// AdminAction appends an admin action record at once; actor is the admin
// (a user ID, or "cli" for the command line).
func (l *Log) AdminAction(ctx context.Context, actor string, a AdminAction) error {
	_, err := l.Append(ctx, Entry{Time: l.o.Now(), Kind: KindAdminAction, Actor: actor, Body: a})
	return err
}
