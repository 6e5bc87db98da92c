package roomserver

import (
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// fuzzVersions are room versions with different event formats, redaction
// rules and room ID rules.
var fuzzVersions = []id.RoomVersion{"1", "3", "4", "10", "11", "12"}

// fuzzTypes are event types whose content the redaction algorithm (applied
// before signing) treats differently.
var fuzzTypes = []struct {
	typ      string
	stateKey *string
}{
	{"m.room.message", nil},
	{"m.room.power_levels", stateKeyPtr("")},
	{"m.room.member", stateKeyPtr("@alice:test.local")},
	{"m.room.join_rules", stateKeyPtr("")},
	{"m.room.history_visibility", stateKeyPtr("")},
	{"m.room.aliases", stateKeyPtr("test.local")},
	{"m.room.redaction", nil},
	{"m.room.create", stateKeyPtr("")},
}

// FuzzEventContentSigns: content the edge accepts for an event
// (mxhttp.CheckEventJSON, a JSON object) builds and signs as a PDU with
// mautrix federation/pdu in every room version — no error, no panic — and
// the signed event verifies: content hash and signature.
func FuzzEventContentSigns(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"body":"hi","msgtype":"m.text"}`, `{"a":9007199254740991,"b":-9007199254740991,"c":[0,-1]}`,
		`{"users":{"@a:b":100},"ban":50,"events":{"m.x":1}}`, `{"membership":"join","join_authorised_via_users_server":"@a:b"}`,
		`{"a":"\ud83d\ude00","\u00e9":"\u2028","é":1,"b":"\"\\\/"}`, `{"allow":[{"type":"m.room_membership","room_id":"!x:y"}],"join_rule":"restricted"}`,
		`{"redacts":"$x","reason":"r"}`, `{"room_version":"12","additional_creators":["@b:c"],"predecessor":{"room_id":"!a:b"}}`,
		`{"a":1.5}`, `{"a":1,"a":2}`, `{"x":"\ud800"}`, `{ "z" : { "y" : [ 1 , 2 ] } , "a" : null }`,
	} {
		f.Add([]byte(s), uint8(0))
	}
	s := &Server{key: mfed.GenerateSigningKey(), serverName: "test.local"}
	getKey := func(serverName string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
		return s.key.Pub, time.Now().Add(time.Hour), nil
	}
	f.Fuzz(func(t *testing.T, content []byte, pick uint8) {
		if mxhttp.CheckEventJSON(content) != nil || !isObject(content) {
			return
		}
		ft := fuzzTypes[int(pick)%len(fuzzTypes)]
		for _, v := range fuzzVersions {
			roomID := id.RoomID("!room:test.local")
			if ft.typ == "m.room.create" && v.RoomIDIsCreateEventID() {
				roomID = ""
			}
			p := &proto{Type: ft.typ, StateKey: ft.stateKey, Sender: "@alice:test.local", Content: content}
			ev, err := s.buildEvent(v, roomID, p, nil, nil, 2, 1700000000000)
			if err != nil {
				t.Fatalf("v%s %s: content %q accepted but cannot be signed: %v", v, ft.typ, content, err)
			}
			if err := verifySigned(v, ev.JSON, getKey); err != nil {
				t.Fatalf("v%s %s: %v\n%s", v, ft.typ, err, ev.JSON)
			}
		}
	})
}

func isObject(b []byte) bool {
	t := strings.TrimSpace(string(b))
	return strings.HasPrefix(t, "{")
}

// verifySigned parses a signed event as a receiving server would and checks
// its content hash and signature.
func verifySigned(v id.RoomVersion, raw []byte, getKey pdu.GetKeyFunc) error {
	if v.EventIDFormat() == id.EventIDFormatCustom {
		var p pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("does not parse: %w", err)
		}
		if !p.VerifyContentHash() {
			return errors.New("content hash does not verify")
		}
		return p.VerifySignature(v, "test.local", getKey)
	}
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("does not parse: %w", err)
	}
	if !p.VerifyContentHash() {
		return errors.New("content hash does not verify")
	}
	return p.VerifySignature(v, "test.local", getKey)
}
