// Package audit is the audit trail: an append-only, hash-chained log, in the
// shared store, of what crosses the server's boundary (one flow record per
// federation transaction, each direction), of what the federation policy
// refused, of policy changes and of admin actions.
//
// Each record carries a sequence number (dense from 1), its time, its kind,
// an actor, a JSON body, the SHA-256 of the previous record's canonical bytes
// and that of its own (Canonical). Appends are serialized by the store
// (storage.AppendAudit), so the chain continues from the last stored record
// across concurrent appenders and restarts and never forks. Nothing in this
// package updates or deletes a record; Verify walks the chain and names the
// first record that does not fit.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/residency"
)

// Kind is what a record is about.
type Kind string

const (
	KindFlow         Kind = "flow"          // data that crossed the boundary (a federation transaction)
	KindRefusal      Kind = "refusal"       // data the policy kept from a server, or a server it refused
	KindPolicyChange Kind = "policy_change" // the policy itself changed (written by the policy core)
	KindAdminAction  Kind = "admin_action"  // an admin endpoint or CLI command changed something
)

// Kinds lists every record kind.
var Kinds = []Kind{KindFlow, KindRefusal, KindPolicyChange, KindAdminAction}

// Data kinds: the names of what may cross the boundary, shared with the
// residency policy (which decides per zone which of them may leave) and the
// metrics.
const (
	DataEvents     = string(residency.Events)     // PDUs
	DataTyping     = string(residency.Typing)     // m.typing EDUs
	DataReceipts   = string(residency.Receipts)   // m.receipt EDUs
	DataPresence   = string(residency.Presence)   // m.presence EDUs
	DataToDevice   = string(residency.ToDevice)   // m.direct_to_device EDUs
	DataDeviceKeys = string(residency.DeviceKeys) // m.device_list_update and m.signing_key_update EDUs
	DataMedia      = string(residency.Media)      // media served to or fetched from another server
	DataProfile    = string(residency.Profile)    // profile queries
	DataDirectory  = string(residency.Directory)  // room directory: aliases, public rooms, hierarchy
	DataKeys       = string(residency.Keys)       // end-to-end key queries and claims (/user/keys/*)
	DataOther      = "other"                      // an EDU type none of the above names
)

// DataKinds lists every data kind.
var DataKinds = []string{DataEvents, DataTyping, DataReceipts, DataPresence, DataToDevice, DataDeviceKeys,
	DataMedia, DataProfile, DataDirectory, DataKeys, DataOther}

// DataKindOfEDU names the data an EDU type carries.
func DataKindOfEDU(eduType string) string {
	switch eduType {
	case "m.typing":
		return DataTyping
	case "m.receipt":
		return DataReceipts
	case "m.presence":
		return DataPresence
	case "m.direct_to_device":
		return DataToDevice
	case "m.device_list_update", "m.signing_key_update":
		return DataDeviceKeys
	}
	return DataOther
}

// GenesisHash is the prev hash of the first record.
var GenesisHash = strings.Repeat("0", 64)

// Record is one audit record as stored and exported.
type Record struct {
	Seq   int64           `json:"seq"`
	TS    int64           `json:"ts"` // ms since the epoch
	Kind  Kind            `json:"kind"`
	Actor string          `json:"actor"`
	Body  json.RawMessage `json:"body"`
	Prev  string          `json:"prev"` // hex SHA-256 of the previous record's canonical bytes
	Hash  string          `json:"hash"` // hex SHA-256 of this record's canonical bytes
}

// Time is the record's time.
func (r Record) Time() time.Time { return time.UnixMilli(r.TS).UTC() }

// Canonical is the record's canonical bytes, what its hash covers: a JSON
// object with the keys in this order, no spaces, the body as stored (itself
// canonical JSON, see CanonicalBody):
//
//	{"actor":…,"body":…,"kind":…,"prev":…,"seq":…,"ts":…}
func (r Record) Canonical() []byte {
	var b bytes.Buffer
	b.WriteString(`{"actor":`)
	b.Write(jsonString(r.Actor))
	b.WriteString(`,"body":`)
	b.Write(r.Body)
	b.WriteString(`,"kind":`)
	b.Write(jsonString(string(r.Kind)))
	b.WriteString(`,"prev":`)
	b.Write(jsonString(r.Prev))
	b.WriteString(`,"seq":`)
	b.WriteString(strconv.FormatInt(r.Seq, 10))
	b.WriteString(`,"ts":`)
	b.WriteString(strconv.FormatInt(r.TS, 10))
	b.WriteByte('}')
	return b.Bytes()
}

// ComputeHash is the hex SHA-256 of the record's canonical bytes.
func (r Record) ComputeHash() string {
	sum := sha256.Sum256(r.Canonical())
	return hex.EncodeToString(sum[:])
}

func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// CanonicalBody re-encodes a JSON value with object keys sorted, no
// insignificant spaces and numbers as written, so that equal bodies hash
// alike whoever encoded them.
func CanonicalBody(raw []byte) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("audit body: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("audit body: more than one JSON value")
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // maps are encoded with sorted keys
		return nil, fmt.Errorf("audit body: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
