package residency

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/serverpattern"
)

// TrustList is a consortium's signed list of member servers and their
// zones (docs/federation-policy.md, "Trust list"). It is signed as Matrix
// signs JSON: an ed25519 signature over the canonical JSON of the object
// without "signatures" and "unsigned", under signatures[issuer][key_id].
type TrustList struct {
	Issuer string `json:"issuer"`
	// Version increases with every list the issuer publishes; a list older
	// than the one in force is refused (no rollback by replaying an old one).
	Version int64 `json:"version"`
	// IssuedTS and ExpiresTS are ms since the epoch; an expired list places
	// no server (ExpiresTS 0: it does not expire).
	IssuedTS  int64 `json:"issued_ts"`
	ExpiresTS int64 `json:"expires_ts,omitempty"`
	// Servers maps each member server's name to its zone.
	Servers    map[string]string            `json:"servers"`
	Signatures map[string]map[string]string `json:"signatures,omitempty"`
}

// Bounds of a trust list document.
const (
	MaxTrustListBytes   = 4 << 20
	MaxTrustListServers = 100_000
)

// ErrTrustList wraps every reason a trust list is refused.
var ErrTrustList = errors.New("trust list refused")

// Expired reports whether the list has expired at now.
func (t *TrustList) Expired(now time.Time) bool {
	return t.ExpiresTS > 0 && now.UnixMilli() >= t.ExpiresTS
}

// VerifyTrustList parses raw and checks it against the pinned issuer and
// key: the issuer's signature under keyID must verify, every server name
// must be valid, and the list must be within bounds. It does not check
// expiry or version (the caller compares with the list in force).
func VerifyTrustList(raw []byte, issuer, keyID string, key ed25519.PublicKey) (*TrustList, error) {
	if len(raw) > MaxTrustListBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrTrustList, MaxTrustListBytes)
	}
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrTrustList)
	}
	var tl TrustList
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tl); err != nil {
		return nil, fmt.Errorf("%w: not a trust list: %v", ErrTrustList, err)
	}
	if tl.Issuer != issuer {
		return nil, fmt.Errorf("%w: issued by %q, not by the pinned issuer %q", ErrTrustList, tl.Issuer, issuer)
	}
	if tl.Version < 1 {
		return nil, fmt.Errorf("%w: version must be positive", ErrTrustList)
	}
	if len(tl.Servers) > MaxTrustListServers {
		return nil, fmt.Errorf("%w: more than %d servers", ErrTrustList, MaxTrustListServers)
	}
	// Placements are by host (case, port and a trailing dot aside, as ACLs
	// match): two names of one host in different zones would place it by
	// map order, differently from one compile to the next.
	byHost := make(map[string]string, len(tl.Servers))
	for server, zone := range tl.Servers {
		if err := config.ValidateServerName(server); err != nil {
			return nil, fmt.Errorf("%w: server %q: %v", ErrTrustList, server, err)
		}
		host := serverpattern.Host(server)
		if other, ok := byHost[host]; ok && tl.Servers[other] != zone {
			return nil, fmt.Errorf("%w: %q and %q name the same server %s in different zones", ErrTrustList, other, server, host)
		}
		byHost[host] = server
	}
	sig, ok := tl.Signatures[issuer][keyID]
	if !ok {
		return nil, fmt.Errorf("%w: no signature by %s %s", ErrTrustList, issuer, keyID)
	}
	sigBytes, err := base64.RawStdEncoding.DecodeString(sig)
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not unpadded base64", ErrTrustList)
	}
	msg, err := signedForm(raw)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(key, msg, sigBytes) {
		return nil, fmt.Errorf("%w: the signature by %s %s does not verify", ErrTrustList, issuer, keyID)
	}
	return &tl, nil
}

// SignTrustList signs tl as issuer with keyID and returns the signed
// document (indented JSON; the signature covers its canonical form).
func SignTrustList(tl TrustList, keyID string, priv ed25519.PrivateKey) ([]byte, error) {
	tl.Signatures = nil
	raw, err := json.Marshal(tl)
	if err != nil {
		return nil, err
	}
	msg, err := signedForm(raw)
	if err != nil {
		return nil, err
	}
	tl.Signatures = map[string]map[string]string{tl.Issuer: {keyID: base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, msg))}}
	return json.MarshalIndent(tl, "", "  ")
}

// signedForm is what the signature covers: the object without
// "signatures" and "unsigned", canonical JSON.
func signedForm(raw []byte) ([]byte, error) {
	msg, err := sjson.DeleteBytes(bytes.Clone(raw), "signatures")
	if err == nil {
		msg, err = sjson.DeleteBytes(msg, "unsigned")
	}
	if err == nil {
		msg, err = canonicaljson.CanonicalJSON(msg)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not canonicalizable: %v", ErrTrustList, err)
	}
	return msg, nil
}
