// Package redact puts a stored PDU through its room version's redaction
// algorithm (mautrix), keeping its hashes and signatures: what the retention
// purge stores for an expired event and what federation serves of an erased
// user's event. The result keeps its event ID, prev/auth edges and what the
// auth rules read, and still verifies.
package redact

import (
	jsonv2 "encoding/json/v2"
	"errors"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// PDU is raw redacted per version, its hashes and signatures kept.
func PDU(version id.RoomVersion, raw []byte) ([]byte, error) {
	if version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(raw, &v1); err != nil {
			return nil, err
		}
		r := v1.Clone().Redact(version)
		r.Signatures, r.Hashes = v1.Signatures, v1.Hashes
		return jsonv2.Marshal(r)
	}
	var e pdu.PDU
	if err := jsonv2.Unmarshal(raw, &e); err != nil {
		return nil, err
	}
	if e.Type == "" {
		return nil, errors.New("not a PDU")
	}
	r := e.Clone().Redact(version)
	r.Signatures, r.Hashes = e.Signatures, e.Hashes
	return jsonv2.Marshal(r)
}
