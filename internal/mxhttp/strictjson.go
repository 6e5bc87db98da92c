package mxhttp

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
	"io"
	"strconv"
	"unicode/utf8"
)

// MaxJSONDepth bounds how deeply client JSON may nest arrays and objects.
// What reads it later recurses (canonical JSON for signing, gjson, other
// servers' and clients' decoders: serde_json stops at 128), so it must not be
// able to exhaust a stack; no Matrix request or event comes near 100 levels.
const MaxJSONDepth = 100

// CheckJSON checks JSON text from a client before anything decodes or stores
// it, so that what we relay parses in every client, not only in lenient ones
// (one string that serde_json refuses fails a Rust client's whole /sync):
//
//   - bytes that are not UTF-8: M_NOT_JSON (RFC 8259 §8.1; Complement's
//     TestRequestEncodingFails expects it), as is anything that is not JSON;
//   - escapes of unpaired UTF-16 surrogates ("\ud800" alone, a lone "\udc00"):
//     M_BAD_JSON — they decode to no Unicode text, and PostgreSQL's jsonb
//     refuses them;
//   - the escape \u0000: M_BAD_JSON (PostgreSQL text cannot hold NUL);
//   - numbers beyond float64 (1e400): M_BAD_JSON — strict decoders refuse them;
//   - nesting deeper than MaxJSONDepth: M_BAD_JSON;
//   - duplicate keys in an object: M_BAD_JSON — decoders disagree on which
//     value wins (and strict ones refuse the object), so two clients reading
//     one relayed to-device message or account data entry could see
//     different things.
//
// Floats and large integers pass: account data, to-device messages and other
// JSON that is never signed may hold them. JSON that becomes event content
// also needs CheckEventJSON. An empty body passes (handlers read it as {}).
func CheckJSON(body []byte) error { return checkJSON(body, false) }

// CheckEventJSON is CheckJSON for JSON that will be part of a signed event:
// it also requires what canonical JSON requires, so that the event can be
// hashed and signed and other servers compute the same bytes. Per the spec's
// canonical JSON section (appendices, "Canonical JSON"), numbers must be
// integers in [-(2^53)+1, 2^53-1], written without fraction or exponent, and
// -0 must not appear. Synapse refuses floats ("Bad JSON value: float") and
// out-of-range integers ("JSON integer out of range") in the events clients
// send; we do the same, and for every room version (Synapse lets floats into
// room versions 1-5, which we could not sign), and we also refuse what Synapse
// accepts by normalizing after parsing: "-0", "1.0" and "1e2" (we keep the
// client's bytes as the content, and they would not be canonical). Everything is
// M_BAD_JSON, checked on the raw bytes: a float64 round trip would turn 2^53+1
// into an acceptable 2^53.
func CheckEventJSON(body []byte) error { return checkJSON(body, true) }

func checkJSON(body []byte, event bool) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if !utf8.Valid(body) {
		return NotJSON("Content is not valid UTF-8")
	}
	if !json.Valid(body) {
		return NotJSON("Content not JSON.")
	}
	return walkJSON(body, event)
}

// walkJSON checks valid UTF-8 JSON text token by token, without recursion.
func walkJSON(body []byte, event bool) error {
	d := jsontext.NewDecoder(bytes.NewReader(body),
		jsontext.AllowInvalidUTF8(false), // refuses unpaired surrogate escapes
		jsontext.AllowDuplicateNames(false))
	for {
		switch d.PeekKind() {
		case '"': // a string or an object key
			v, err := d.ReadValue()
			if err != nil {
				return walkError(err)
			}
			if HasNULEscape(v) {
				return BadJSON("Strings may not contain the NUL character (\\u0000)")
			}
		case '0':
			v, err := d.ReadValue()
			if err != nil {
				return walkError(err)
			}
			if err := checkNumber(v, event); err != nil {
				return err
			}
		default:
			tok, err := d.ReadToken()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return walkError(err)
			}
			if k := tok.Kind(); (k == '{' || k == '[') && d.StackDepth() > MaxJSONDepth {
				return BadJSON("JSON may not nest deeper than %d levels", MaxJSONDepth)
			}
		}
	}
}

// walkError describes what the decoder refused in text that json.Valid and
// utf8.Valid accepted: an unpaired surrogate or a duplicate key.
func walkError(err error) error {
	if errors.Is(err, jsontext.ErrDuplicateName) {
		return BadJSON("Duplicate key in JSON object: %v", err)
	}
	return BadJSON("Strings may not contain unpaired UTF-16 surrogates: %v", err)
}

// maxCanonicalInt is 2^53-1, the largest integer canonical JSON allows.
const maxCanonicalInt = 1<<53 - 1

// checkNumber checks a JSON number literal: finite as a float64, and for
// events a canonical JSON integer (see CheckEventJSON).
func checkNumber(num []byte, event bool) error {
	if !event {
		if _, err := strconv.ParseFloat(string(num), 64); err != nil {
			return BadJSON("Number %.40s is out of range", num)
		}
		return nil
	}
	digits := bytes.TrimPrefix(num, []byte("-"))
	if bytes.ContainsAny(digits, ".eE") {
		return BadJSON("Bad JSON value: float (%.40s); event content may only hold integers", num)
	}
	if string(num) == "-0" {
		return BadJSON("Bad JSON value: -0 is not canonical JSON")
	}
	// A valid JSON integer: digits only, no leading zeros.
	if n, err := strconv.ParseUint(string(digits), 10, 64); err != nil || n > maxCanonicalInt {
		return BadJSON("JSON integer out of range: %.40s (canonical JSON allows ±(2^53-1))", num)
	}
	return nil
}
