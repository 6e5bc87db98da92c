package keyserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/storage"
)

// UploadRequest is the body of POST /keys/upload.
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys,omitempty"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys,omitempty"`
	// The MSC2732 unstable name some clients still send.
	UnstableFallbackKeys map[string]json.RawMessage `json:"org.matrix.msc2732.fallback_keys,omitempty"`
}

// UploadResponse is the answer to POST /keys/upload.
type UploadResponse struct {
	OneTimeKeyCounts map[string]int `json:"one_time_key_counts"`
}

type deviceKeysBody struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
	Dehydrated bool                         `json:"dehydrated"`
}

// checkDeviceKeys validates a device_keys object for (userID, deviceID): its
// required fields (missing or malformed: M_BAD_JSON), the ids, and the
// device's self-signature when there is one. Unsigned keys are accepted, as
// Synapse and Dendrite do (clients check the self-signature when they query
// the keys, and refuse a device without one); a self-signature that does not
// verify is refused.
func checkDeviceKeys(raw json.RawMessage, userID, deviceID string) (*storage.DeviceKeys, error) {
	var dk deviceKeysBody
	if err := mxhttp.DecodeJSON(raw, &dk); err != nil {
		return nil, err
	}
	if dk.UserID != userID || dk.DeviceID != deviceID {
		return nil, mxhttp.InvalidParam("device_keys.user_id and device_id must be %s and %s", userID, deviceID)
	}
	if len(dk.Algorithms) == 0 {
		return nil, mxhttp.BadJSON("device_keys.algorithms must list the supported algorithms")
	}
	ed, curve := dk.Keys["ed25519:"+deviceID], dk.Keys["curve25519:"+deviceID]
	if !isKey(ed) || !isKey(curve) {
		return nil, mxhttp.BadJSON("device_keys.keys must hold ed25519:%s and curve25519:%s keys", deviceID, deviceID)
	}
	if dk.Signatures == nil {
		return nil, mxhttp.BadJSON("device_keys.signatures is required")
	}
	if _, signed := dk.Signatures[userID]["ed25519:"+deviceID]; signed {
		if err := verifySignature(raw, userID, deviceID, ed); err != nil {
			return nil, mxhttp.InvalidSignature("device_keys: %v", err)
		}
	}
	stored, err := withoutUnsigned(raw)
	if err != nil {
		return nil, err
	}
	return &storage.DeviceKeys{UserID: userID, DeviceID: deviceID, Ed25519: ed, KeyJSON: stored, Dehydrated: dk.Dehydrated}, nil
}

// withoutUnsigned drops the client's unsigned field (the server supplies its
// own on query) and canonicalizes. What remains is signed JSON that other
// clients canonicalize to verify, so it must already be canonical JSON's
// kind of JSON (integers within ±(2^53-1), no -0, no duplicate keys):
// anything else is the client's M_BAD_JSON, not a re-encoding we would store.
func withoutUnsigned(raw []byte) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, mxhttp.BadJSON("Expected a JSON object")
	}
	delete(obj, "unsigned")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, mxhttp.BadJSON("Expected a JSON object")
	}
	if err := mxhttp.CheckEventJSON(b); err != nil {
		return nil, err
	}
	c, err := canonical(b)
	if err != nil {
		return nil, mxhttp.BadJSON("Signed key is not canonical JSON: %v", err)
	}
	return c, nil
}

// Bounds on what one device may hold, checked before any signature is
// verified and again against what is stored. Honest clients keep about 50
// one-time keys on the server (libolm and vodozemac remember at most 100
// private ones); 500 is also Synapse's bound. A device has one fallback key per
// algorithm, and there are few algorithms.
const (
	MaxOneTimeKeys  = 500
	MaxFallbackKeys = 16
	maxKeyIDBytes   = 255 // "algorithm:key_id"
)

// checkOneTimeKeys validates one-time or fallback keys: "algorithm:key_id" →
// value. signed_* keys must be signed by the device's ed25519 key ed.
func checkOneTimeKeys(keys map[string]json.RawMessage, userID, deviceID, ed, what string, limit int) ([]storage.OneTimeKey, error) {
	if len(keys) > limit {
		return nil, mxhttp.InvalidParam("%s: %d keys in one upload; a device may hold at most %d", what, len(keys), limit)
	}
	ids := make([]string, 0, len(keys))
	for k := range keys {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	out := make([]storage.OneTimeKey, 0, len(keys))
	for _, full := range ids {
		raw := keys[full]
		alg, keyID, ok := strings.Cut(full, ":")
		if !ok || alg == "" || keyID == "" {
			return nil, mxhttp.InvalidParam("%s: key ID %q is not of the form algorithm:key_id", what, full)
		}
		if len(full) > maxKeyIDBytes {
			return nil, mxhttp.InvalidParam("%s: key IDs are at most %d bytes", what, maxKeyIDBytes)
		}
		if strings.HasPrefix(alg, "signed_") {
			var k struct {
				Key string `json:"key"`
			}
			if err := json.Unmarshal(raw, &k); err != nil || !isKey(k.Key) {
				return nil, mxhttp.BadJSON("%s: %s must be an object with a base64 key", what, full)
			}
			if ed == "" {
				return nil, mxhttp.InvalidParam("%s: upload device keys before signed keys", what)
			}
			if err := verifySignature(raw, userID, deviceID, ed); err != nil {
				return nil, mxhttp.InvalidSignature("%s: %s: %v", what, full, err)
			}
		} else {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil || !isKey(s) {
				return nil, mxhttp.BadJSON("%s: %s must be a base64 key", what, full)
			}
		}
		var c []byte
		var err error
		if strings.HasPrefix(alg, "signed_") {
			c, err = withoutUnsigned(raw)
		} else {
			c, err = canonical(raw)
		}
		if err != nil {
			return nil, mxhttp.BadJSON("%s: %s is not valid JSON", what, full)
		}
		out = append(out, storage.OneTimeKey{Algorithm: alg, KeyID: keyID, KeyJSON: c})
	}
	return out, nil
}

// prepareUpload validates an upload for (userID, deviceID) into a storage.KeyUpload.
func (s *Service) prepareUpload(ctx context.Context, userID, deviceID string, req *UploadRequest) (*storage.KeyUpload, error) {
	up := &storage.KeyUpload{UserID: userID, DeviceID: deviceID, Now: s.now().UnixMilli(),
		MaxOneTimeKeys: MaxOneTimeKeys, MaxFallbackKeys: MaxFallbackKeys}
	var ed string
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		dk, err := checkDeviceKeys(req.DeviceKeys, userID, deviceID)
		if err != nil {
			return nil, err
		}
		up.DeviceKeys, ed = dk, dk.Ed25519
	}
	fallback := req.FallbackKeys
	if len(fallback) == 0 {
		fallback = req.UnstableFallbackKeys
	}
	if ed == "" && (len(req.OneTimeKeys) > 0 || len(fallback) > 0) {
		stored, err := s.store.DeviceKeyEd25519(ctx, userID, deviceID)
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		ed = stored
	}
	var err error
	if up.OneTimeKeys, err = checkOneTimeKeys(req.OneTimeKeys, userID, deviceID, ed, "one_time_keys", MaxOneTimeKeys); err != nil {
		return nil, err
	}
	if up.FallbackKeys, err = checkOneTimeKeys(fallback, userID, deviceID, ed, "fallback_keys", MaxFallbackKeys); err != nil {
		return nil, err
	}
	algs := map[string]bool{}
	for _, k := range up.FallbackKeys {
		if algs[k.Algorithm] {
			return nil, mxhttp.InvalidParam("fallback_keys: one key per algorithm")
		}
		algs[k.Algorithm] = true
	}
	return up, nil
}

// uploadError turns the storage errors of a refused upload into the client's
// error; other errors pass through.
func uploadError(err error) error {
	var conflict *storage.KeyConflictError
	if errors.As(err, &conflict) {
		return mxhttp.InvalidParam("One-time key %s already exists with different content", conflict.KeyID)
	}
	var limit *storage.KeyLimitError
	if errors.As(err, &limit) {
		return mxhttp.InvalidParam("The device would hold %d %s; at most %d are kept per device", limit.Held, limit.What, limit.Max)
	}
	return err
}

// Upload handles POST /keys/upload for the calling device.
func (s *Service) Upload(ctx context.Context, userID, deviceID string, req *UploadRequest) (*UploadResponse, error) {
	up, err := s.prepareUpload(ctx, userID, deviceID, req)
	if err != nil {
		return nil, err
	}
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return nil, err
	}
	up.StreamPos = pos
	changed, err := s.store.UploadKeys(ctx, *up)
	finish()
	if err := uploadError(err); err != nil {
		return nil, fmt.Errorf("storing keys: %w", err)
	}
	if changed {
		s.deviceListChanged(ctx, userID, pos)
		s.announce(ctx, userID)
	}
	counts, err := s.OneTimeKeyCounts(ctx, userID, deviceID)
	if err != nil {
		return nil, err
	}
	return &UploadResponse{OneTimeKeyCounts: counts}, nil
}

// QueryRequest is the body of POST /keys/query.
type QueryRequest struct {
	DeviceKeys map[string][]string `json:"device_keys"`
	Timeout    int64               `json:"timeout,omitempty"` // ms to wait for remote servers (remoteTimeout)
}

// QueryResponse is the answer to POST /keys/query.
type QueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
	Failures        map[string]any                        `json:"failures"`
}

// Remote key queries and claims wait for the servers asked at most the
// request's timeout: the spec's recommended 10 s unless the client gives one,
// never more than a minute. A server that has not answered by then is
// reported in `failures`; what the others and this server answered is
// returned. Local users' keys never wait (and, with no federation module
// plugged in, nothing remote is asked at all).
const (
	defaultRemoteTimeout = 10 * time.Second
	maxRemoteTimeout     = time.Minute
)

// remoteTimeout reads a request's timeout in milliseconds (0: the default).
func remoteTimeout(ms int64) (time.Duration, error) {
	switch {
	case ms < 0:
		return 0, mxhttp.InvalidParam("timeout must not be negative")
	case ms == 0:
		return defaultRemoteTimeout, nil
	case ms >= maxRemoteTimeout.Milliseconds():
		return maxRemoteTimeout, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// askRemote asks each server for its users' part of a request, concurrently
// and all within timeout, hands each answer to merge (in the caller's
// goroutine) and returns what to report in `failures` per server.
func askRemote[T any](ctx context.Context, fed Federation, timeout time.Duration, byServer map[string][]string,
	ask func(ctx context.Context, server string, users []string) (T, error), merge func(server string, answer T),
) map[string]any {
	failures := map[string]any{}
	if fed == nil {
		for server := range byServer {
			failures[server] = remoteFailure(nil)
		}
		return failures
	}
	if len(byServer) == 0 {
		return failures
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type answer struct {
		server string
		v      T
		err    error
	}
	answers := make(chan answer, len(byServer)) // buffered: a late answer never blocks
	waiting := map[string]bool{}
	for server, users := range byServer {
		waiting[server] = true
		go func() {
			// A panic becomes this server's failure instead of a crash.
			var v T
			err := recovery.Call(recovery.RemoteQuery, func() (err error) {
				v, err = ask(ctx, server, users)
				return err
			}, "server", server)
			answers <- answer{server, v, err}
		}()
	}
	for len(waiting) > 0 {
		select {
		case a := <-answers:
			delete(waiting, a.server)
			if a.err != nil {
				failures[a.server] = remoteFailure(a.err)
			} else {
				merge(a.server, a.v)
			}
		case <-ctx.Done():
			for server := range waiting {
				failures[server] = remoteFailure(fmt.Errorf("%s did not answer within %v", server, timeout))
			}
			return failures
		}
	}
	return failures
}

// onServer reports whether userID belongs to server: a remote server answers
// for its own users only.
func onServer(userID, server string) bool { return id.UserID(userID).Homeserver() == server }

// remoteFailure is what `failures` says about a server we cannot ask.
func remoteFailure(err error) map[string]any {
	if err == nil {
		return map[string]any{"errcode": "M_UNRECOGNIZED", "error": "Federation is not available on this server"}
	}
	return map[string]any{"errcode": "M_UNKNOWN", "error": err.Error()}
}

// splitUsers groups valid user IDs into local ones and remote ones by server.
func (s *Service) splitUsers(users []string) (local []string, remote map[string][]string, err error) {
	remote = map[string][]string{}
	for _, u := range users {
		_, server, perr := id.UserID(u).Parse()
		if perr != nil || server == "" {
			return nil, nil, mxhttp.InvalidParam("%q is not a valid user ID", u)
		}
		if server == s.serverName {
			local = append(local, u)
		} else {
			remote[server] = append(remote[server], u)
		}
	}
	sort.Strings(local)
	return local, remote, nil
}

// Query handles POST /keys/query for requester.
func (s *Service) Query(ctx context.Context, requester string, req *QueryRequest) (*QueryResponse, error) {
	resp := &QueryResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	timeout, err := remoteTimeout(req.Timeout)
	if err != nil {
		return nil, err
	}
	local, remote, err := s.splitUsers(slices.Collect(maps.Keys(req.DeviceKeys)))
	if err != nil {
		return nil, err
	}
	if err := s.queryLocal(ctx, requester, local, req.DeviceKeys, resp); err != nil {
		return nil, err
	}
	// Tracked remote users with a fresh cached list are answered from it
	// (remotedevices.go); the others are asked, and fill the cache.
	toFill, err := s.queryCached(ctx, remote, req.DeviceKeys, resp)
	if err != nil {
		return nil, err
	}
	ask := func(ctx context.Context, server string, users []string) (*QueryResponse, error) {
		q := map[string][]string{}
		for _, u := range users {
			q[u] = req.DeviceKeys[u]
		}
		return s.fed.QueryKeys(ctx, server, q)
	}
	var fill []storage.RemoteDeviceList
	resp.Failures = askRemote(ctx, s.fed, timeout, remote, ask, func(server string, r *QueryResponse) {
		fill = append(fill, s.checkRemoteAnswer(server, r, remote[server], req.DeviceKeys, toFill, resp)...)
	})
	s.fillCache(ctx, fill)
	if err := s.addOwnSignaturesOnRemote(ctx, requester, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Service) queryLocal(ctx context.Context, requester string, users []string, wanted map[string][]string, resp *QueryResponse) error {
	if len(users) == 0 {
		return nil
	}
	devs, err := s.store.QueryDeviceKeys(ctx, users)
	if err != nil {
		return err
	}
	cross, err := s.store.CrossSigningKeys(ctx, users)
	if err != nil {
		return err
	}
	sigList, err := s.store.SignaturesOn(ctx, users)
	if err != nil {
		return err
	}
	// Device display names are public (spec: device management), so every
	// requester sees them, under the unsigned part the spec gives them.
	names, err := s.store.DeviceDisplayNames(ctx, users)
	if err != nil {
		return err
	}
	// target user → key id → signer → key → signature, keeping only what the
	// requester may see: signatures by the key's owner or by the requester.
	sigs := map[string]map[string]map[string]map[string]string{}
	for _, sg := range sigList {
		if sg.SignerUserID != sg.TargetUserID && sg.SignerUserID != requester {
			continue
		}
		byKey := sigs[sg.TargetUserID]
		if byKey == nil {
			byKey = map[string]map[string]map[string]string{}
			sigs[sg.TargetUserID] = byKey
		}
		bySigner := byKey[sg.TargetKeyID]
		if bySigner == nil {
			bySigner = map[string]map[string]string{}
			byKey[sg.TargetKeyID] = bySigner
		}
		if bySigner[sg.SignerUserID] == nil {
			bySigner[sg.SignerUserID] = map[string]string{}
		}
		bySigner[sg.SignerUserID][sg.SignerKeyID] = sg.Signature
	}
	for _, u := range users {
		out := map[string]json.RawMessage{}
		only := wanted[u]
		for dev, raw := range devs[u] {
			if len(only) > 0 && !slices.Contains(only, dev) {
				continue
			}
			var unsigned map[string]any
			if name := names[u][dev]; name != "" {
				unsigned = map[string]any{"device_display_name": name}
			}
			merged, err := mergeSignatures(raw, sigs[u][dev], unsigned)
			if err != nil {
				return fmt.Errorf("merging signatures on %s/%s: %w", u, dev, err)
			}
			out[dev] = merged
		}
		resp.DeviceKeys[u] = out
		for typ, k := range cross[u] {
			if typ == "user_signing" && u != requester {
				continue
			}
			merged, err := mergeSignatures(k.KeyJSON, sigs[u][k.PublicKey], nil)
			if err != nil {
				return fmt.Errorf("merging signatures on %s's %s key: %w", u, typ, err)
			}
			switch typ {
			case "master":
				resp.MasterKeys[u] = merged
			case "self_signing":
				resp.SelfSigningKeys[u] = merged
			case "user_signing":
				resp.UserSigningKeys[u] = merged
			}
		}
	}
	return nil
}

// ClaimRequest is the body of POST /keys/claim.
type ClaimRequest struct {
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	Timeout     int64                        `json:"timeout,omitempty"`
}

// ClaimResponse is the answer to POST /keys/claim.
type ClaimResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]any                                   `json:"failures"`
}

// Claim handles POST /keys/claim: one key per requested device, a one-time
// key if any is left (never handed out twice), else the fallback key. Unknown
// users and devices are simply absent from the answer.
func (s *Service) Claim(ctx context.Context, req *ClaimRequest) (*ClaimResponse, error) {
	resp := &ClaimResponse{OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
	timeout, err := remoteTimeout(req.Timeout)
	if err != nil {
		return nil, err
	}
	local, remote, err := s.splitUsers(slices.Collect(maps.Keys(req.OneTimeKeys)))
	if err != nil {
		return nil, err
	}
	var claims []storage.KeyClaim
	for _, u := range local {
		devs := make([]string, 0, len(req.OneTimeKeys[u]))
		for d := range req.OneTimeKeys[u] {
			devs = append(devs, d)
		}
		sort.Strings(devs)
		for _, d := range devs {
			alg := req.OneTimeKeys[u][d]
			if alg == "" {
				return nil, mxhttp.InvalidParam("one_time_keys: no algorithm given for %s/%s", u, d)
			}
			claims = append(claims, storage.KeyClaim{UserID: u, DeviceID: d, Algorithm: alg})
		}
	}
	if len(claims) > 0 {
		got, err := s.store.ClaimKeys(ctx, claims)
		if err != nil {
			return nil, err
		}
		for _, k := range got {
			byDev := resp.OneTimeKeys[k.UserID]
			if byDev == nil {
				byDev = map[string]map[string]json.RawMessage{}
				resp.OneTimeKeys[k.UserID] = byDev
			}
			byDev[k.DeviceID] = map[string]json.RawMessage{k.Algorithm + ":" + k.KeyID: k.KeyJSON}
		}
	}
	ask := func(ctx context.Context, server string, users []string) (map[string]map[string]map[string]json.RawMessage, error) {
		q := map[string]map[string]string{}
		for _, u := range users {
			q[u] = req.OneTimeKeys[u]
		}
		return s.fed.ClaimKeys(ctx, server, q)
	}
	resp.Failures = askRemote(ctx, s.fed, timeout, remote, ask, func(server string, r map[string]map[string]map[string]json.RawMessage) {
		keepClaimed(resp.OneTimeKeys, r, server, req.OneTimeKeys)
	})
	return resp, nil
}

// keepClaimed copies into dst what server's claim answer holds for what was
// asked of it: for each device of its own users named in asked, one key of
// the algorithm named (the lowest key ID). A server does not get to hand the
// client keys of users or devices nobody claimed, nor many keys for one.
func keepClaimed(dst, answer map[string]map[string]map[string]json.RawMessage, server string, asked map[string]map[string]string) {
	for u, devs := range asked {
		if !onServer(u, server) {
			continue
		}
		for dev, alg := range devs {
			best := ""
			for keyID := range answer[u][dev] {
				if strings.HasPrefix(keyID, alg+":") && (best == "" || keyID < best) {
					best = keyID
				}
			}
			if best == "" {
				continue
			}
			if dst[u] == nil {
				dst[u] = map[string]map[string]json.RawMessage{}
			}
			dst[u][dev] = map[string]json.RawMessage{best: answer[u][dev][best]}
		}
	}
}
