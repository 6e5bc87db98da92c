package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.mau.fi/util/jsontime"
	"golang.org/x/sync/singleflight"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/storage"
)

// KeyStore persists remote servers' keys (implemented by *storage.DB).
type KeyStore interface {
	StoreServerKeyResponse(ctx context.Context, resp storage.ServerKeyResponse, keys []storage.ServerKey) error
	GetServerKey(ctx context.Context, serverName, keyID string) (*storage.ServerKey, error)
	ServerKeys(ctx context.Context, serverName string) ([]storage.ServerKey, error)
	ServerKeyResponses(ctx context.Context, serverName string) ([]storage.ServerKeyResponse, error)
}

// KeyClient is the part of the federation client the fetcher uses
// (mautrix's *federation.Client).
type KeyClient interface {
	ServerKeys(ctx context.Context, serverName string) (*mfed.ServerKeyResponse, error)
	QueryKeys(ctx context.Context, serverName string, req *mfed.ReqQueryKeys) (*mfed.QueryKeysResponse, error)
}

// Errors of key lookups.
var (
	ErrKeyNotFound    = errors.New("signing key not found")
	ErrServerDenied   = errors.New("server refused by the federation policy")
	ErrFetchBackoff   = errors.New("recent key fetch failed; backing off")
	ErrBadKeyResponse = errors.New("invalid key response")
	ErrBadServerName  = errors.New("invalid server name")
	ErrFetchLimited   = errors.New("too many key fetches caused by this requester")
)

// maxKeyValidity caps a fetched valid_until_ts, as the spec requires (the
// lesser of valid_until_ts and 7 days ahead).
const maxKeyValidity = 7 * 24 * time.Hour

// How often servers are asked for their keys. Lookups come from
// unauthenticated input (any X-Matrix header names any origin and key ID,
// any notary query any server), so every bound holds per server and per
// requester, and memory for them is bounded too.
const (
	// Negative-cache backoff after a failed fetch: doubling from min to max.
	// The max stays short: a failure may have been provoked by someone else.
	minFetchBackoff = 30 * time.Second
	maxFetchBackoff = 10 * time.Minute
	// minRefetchInterval: after a server answered, key IDs it did not list
	// are answered "not found" from that answer for this long instead of
	// asking again (a forged key ID per request would otherwise be a fetch
	// per request; a real new key waits at most this long).
	minRefetchInterval = time.Minute
	// maxTrackedServers bounds the per-server records (LRU).
	maxTrackedServers = 10000
)

// KeyFetcher finds other servers' signing keys: from the store, else from
// the server itself (GET /_matrix/key/v2/server), else from the configured
// notaries (POST /_matrix/key/v2/query). Every response is checked (server
// name, self-signatures, notary signatures, bounds) before anything is
// stored. Failures are cached per server with exponential backoff, a server
// that answered is not asked again for minRefetchInterval, fetches caused by
// one requester are rate-limited, and concurrent lookups of one server share
// one fetch. It implements roomserver.KeyGetter.
type KeyFetcher struct {
	Own      *KeyRing
	Store    KeyStore
	Client   KeyClient
	Notaries []config.TrustedKeyServer
	Policy   Policy
	// Timeout bounds a GetKey call (which has no context of its own).
	Timeout time.Duration
	Now     func() time.Time
	// RequesterFetches limits the fetches one requester (WithRequester) may
	// cause; nil: unlimited.
	RequesterFetches *ratelimit.Limiter

	group    singleflight.Group
	initOnce sync.Once
	failures *lru[string, fetchFailure]
	answered *lru[string, time.Time] // when each server last answered
}

type fetchFailure struct {
	count int
	until time.Time
	err   error
}

func (f *KeyFetcher) init() {
	f.initOnce.Do(func() {
		f.failures = newLRU[string, fetchFailure](maxTrackedServers)
		f.answered = newLRU[string, time.Time](maxTrackedServers)
	})
}

func (f *KeyFetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

type requesterKey struct{}

// WithRequester marks ctx as serving a request from requester (a remote
// IP): the key fetches it causes count against that requester's budget.
func WithRequester(ctx context.Context, requester string) context.Context {
	return context.WithValue(ctx, requesterKey{}, requester)
}

func requesterOf(ctx context.Context) string {
	s, _ := ctx.Value(requesterKey{}).(string)
	return s
}

// GetKey implements roomserver.KeyGetter (mautrix's pdu.GetKeyFunc): the key
// and until when it may be used (an old key: its expired_ts). A stored key
// valid until minValidUntil is answered at once; otherwise the server is
// asked again, and if that fails the stored key is still returned with its
// validity, for the caller to judge (room versions 1-4 ignore validity).
func (f *KeyFetcher) GetKey(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	k, err := f.Lookup(ctx, serverName, keyID, minValidUntil)
	if err != nil {
		return "", time.Time{}, err
	}
	return id.SigningKey(k.VerifyKey), keyValidUntil(k), nil
}

// GetKeyVia is GetKey for one import of a room joined through notary (the
// resident server, roomserver.NotaryKeyGetter): a key neither stored nor
// fetched from its owner nor from the configured notaries is asked of notary
// as a notary (POST /_matrix/key/v2/query). Its answer is checked as any
// notary's (signed by notary with a key fetched from notary itself,
// self-signed by the key's owner, bounded) and stored like one: the resident
// can only pass on keys their owner published.
func (f *KeyFetcher) GetKeyVia(ctx context.Context, notary, serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	k, err := f.Lookup(ctx, serverName, keyID, minValidUntil)
	if err != nil && notary != "" && notary != serverName && notary != f.Own.ServerName && !errors.Is(err, ErrBadServerName) && !errors.Is(err, ErrServerDenied) && validKeyID(keyID) {
		nerr := f.fetchFromNotaries(ctx, []config.TrustedKeyServer{{ServerName: notary}}, serverName, keyID, minValidUntil)
		if nerr != nil {
			return "", time.Time{}, errors.Join(err, nerr)
		}
		if k, err = f.Store.GetServerKey(ctx, serverName, string(keyID)); err != nil {
			return "", time.Time{}, fmt.Errorf("key %s of %s from notary %s: %w", keyID, serverName, notary, err)
		}
	}
	if err != nil {
		return "", time.Time{}, err
	}
	return id.SigningKey(k.VerifyKey), keyValidUntil(k), nil
}

// keyValidUntil is until when a stored key may be used.
func keyValidUntil(k *storage.ServerKey) time.Time {
	if k.ExpiredTS != 0 {
		return time.UnixMilli(k.ExpiredTS)
	}
	return time.UnixMilli(k.ValidUntilTS)
}

// Lookup is GetKey with a context, answering the stored row (ExpiredTS != 0
// marks a key from old_verify_keys, which may verify events but not requests).
func (f *KeyFetcher) Lookup(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time) (*storage.ServerKey, error) {
	if serverName == f.Own.ServerName {
		key, until, ok := f.Own.Lookup(keyID, f.now())
		if !ok {
			return nil, fmt.Errorf("%w: %s of %s", ErrKeyNotFound, keyID, serverName)
		}
		k := &storage.ServerKey{ServerName: serverName, KeyID: string(keyID), VerifyKey: string(key), ValidUntilTS: until.UnixMilli()}
		if keyID != f.Own.Key.ID {
			k.ValidUntilTS, k.ExpiredTS = 0, until.UnixMilli()
		}
		return k, nil
	}
	if err := config.ValidateServerName(serverName); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadServerName, err)
	}
	if !validKeyID(keyID) {
		// Nothing is stored under such an ID, and no response may carry one.
		return nil, fmt.Errorf("%w: %q of %s is not an ed25519 key ID", ErrKeyNotFound, keyID, serverName)
	}
	stored, err := f.Store.GetServerKey(ctx, serverName, string(keyID))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if stored != nil && !keyValidUntil(stored).Before(minValidUntil) {
		return stored, nil
	}
	fetchErr := f.refresh(ctx, serverName, keyID, minValidUntil, true)
	if fresh, err := f.Store.GetServerKey(ctx, serverName, string(keyID)); err == nil {
		return fresh, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if fetchErr != nil {
		return nil, fmt.Errorf("key %s of %s: %w", keyID, serverName, fetchErr)
	}
	return nil, fmt.Errorf("%w: %s of %s", ErrKeyNotFound, keyID, serverName)
}

// refresh fetches serverName's keys (directly, then, if viaNotaries and the
// key is still missing or not valid long enough, through the notaries),
// honouring the name grammar, the policy, the failure backoff, the refetch
// interval and the requester's budget; concurrent refreshes of one server
// share one fetch, which a caller stops waiting for when its ctx ends.
func (f *KeyFetcher) refresh(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time, viaNotaries bool) error {
	f.init()
	if err := config.ValidateServerName(serverName); err != nil {
		return fmt.Errorf("%w: %v", ErrBadServerName, err)
	}
	if !f.Policy.AllowServer(ctx, serverName, PurposeKeyFetch) {
		return ErrServerDenied
	}
	if err := f.backingOff(serverName); err != nil {
		return err
	}
	if at, ok := f.answered.get(serverName); ok && f.now().Sub(at) < minRefetchInterval {
		return nil // what it answered a moment ago stands
	}
	if r := requesterOf(ctx); r != "" && f.RequesterFetches != nil {
		if ok, _ := f.RequesterFetches.Allow(r); !ok {
			return ErrFetchLimited
		}
	}
	flight := fmt.Sprintf("%t\x00%s", viaNotaries, serverName)
	ch := f.group.DoChan(flight, func() (any, error) {
		// Detached from the first caller's context so that its cancellation
		// does not fail the others sharing the fetch; still bounded.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
		defer cancel()
		err := f.fetchDirect(fctx, serverName)
		reached := err == nil
		if (!reached || !f.has(fctx, serverName, keyID, minValidUntil)) && viaNotaries && len(f.Notaries) > 0 {
			if nerr := f.fetchFromNotaries(fctx, f.Notaries, serverName, keyID, minValidUntil); nerr != nil {
				err = errors.Join(err, nerr)
			} else {
				err = nil
			}
		}
		f.recordOutcome(serverName, reached, err)
		return nil, err
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the keys of %s: %w", serverName, ctx.Err())
	}
}

func (f *KeyFetcher) has(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time) bool {
	k, err := f.Store.GetServerKey(ctx, serverName, string(keyID))
	return err == nil && !keyValidUntil(k).Before(minValidUntil)
}

func (f *KeyFetcher) backingOff(serverName string) error {
	if fl, ok := f.failures.get(serverName); ok && f.now().Before(fl.until) {
		return fmt.Errorf("%w (until %s): %v", ErrFetchBackoff, fl.until.Format(time.RFC3339), fl.err)
	}
	return nil
}

// recordOutcome notes a fetch: a server that answered starts the refetch
// interval and leaves backoff. Only a server that could not be asked (and
// no notary knew its keys) backs off: a key ID it does not have is an
// answer, not an outage, and an unauthenticated X-Matrix header names any
// key ID it likes.
func (f *KeyFetcher) recordOutcome(serverName string, reached bool, err error) {
	now := f.now()
	if reached || err == nil {
		f.answered.put(serverName, now)
		f.failures.remove(serverName)
		return
	}
	fl := f.failures.update(serverName, func(fl fetchFailure, _ bool) fetchFailure {
		fl.count++
		fl.until, fl.err = now.Add(min(minFetchBackoff<<min(fl.count-1, 10), maxFetchBackoff)), err
		return fl
	})
	slog.Warn("fetching server keys failed", "server", serverName, "failures", fl.count, "retry_after", fl.until, "err", err)
}

// fetchDirect asks the server itself.
func (f *KeyFetcher) fetchDirect(ctx context.Context, serverName string) error {
	resp, err := f.Client.ServerKeys(ctx, serverName)
	if err != nil {
		return fmt.Errorf("fetching keys from %s: %w", serverName, err)
	}
	stored, keys, err := f.checkResponse(serverName, resp)
	if err != nil {
		return fmt.Errorf("keys from %s: %w", serverName, err)
	}
	return f.Store.StoreServerKeyResponse(ctx, stored, keys)
}

// fetchFromNotaries asks each notary in turn until one answers with the key.
func (f *KeyFetcher) fetchFromNotaries(ctx context.Context, notaries []config.TrustedKeyServer, serverName string, keyID id.KeyID, minValidUntil time.Time) error {
	req := &mfed.ReqQueryKeys{ServerKeys: map[string]map[id.KeyID]mfed.QueryKeysCriteria{
		serverName: {keyID: {MinimumValidUntilTS: jsontime.UM(minValidUntil)}},
	}}
	var errs []error
	for _, notary := range notaries {
		if notary.ServerName == serverName || notary.ServerName == f.Own.ServerName {
			continue
		}
		if !f.Policy.AllowServer(ctx, notary.ServerName, PurposeKeyFetch) {
			errs = append(errs, fmt.Errorf("notary %s: %w", notary.ServerName, ErrServerDenied))
			continue
		}
		resp, err := f.Client.QueryKeys(ctx, notary.ServerName, req)
		if err != nil {
			errs = append(errs, fmt.Errorf("notary %s: %w", notary.ServerName, err))
			continue
		}
		checked, err := f.checkNotaryAnswer(ctx, notary, serverName, resp)
		if err != nil {
			errs = append(errs, fmt.Errorf("notary %s: %w", notary.ServerName, err))
			continue
		}
		for _, c := range checked {
			if err := f.Store.StoreServerKeyResponse(ctx, c.resp, c.keys); err != nil {
				return err
			}
		}
		if f.has(ctx, serverName, keyID, minValidUntil) {
			return nil
		}
		if len(checked) > 0 {
			errs = append(errs, fmt.Errorf("notary %s: no key %s valid long enough", notary.ServerName, keyID))
		}
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w: no notary knows %s of %s", ErrKeyNotFound, keyID, serverName)
	}
	return errors.Join(errs...)
}

// checkedResponse is a key response that passed every check, ready to store.
type checkedResponse struct {
	resp storage.ServerKeyResponse
	keys []storage.ServerKey
}

// checkNotaryAnswer checks a notary's answer about serverName: the first
// few responses about that server (a notary may add others; only what we
// asked for is taken), each signed by the notary and valid on its own.
// One bad response spoils the answer.
func (f *KeyFetcher) checkNotaryAnswer(ctx context.Context, notary config.TrustedKeyServer, serverName string, resp *mfed.QueryKeysResponse) ([]checkedResponse, error) {
	var out []checkedResponse
	for _, skr := range resp.ServerKeys {
		if skr == nil || skr.ServerName != serverName {
			continue
		}
		if len(out) == storage.KeptServerKeyResponses {
			break // only the latest are kept anyway
		}
		if err := f.checkNotarySignature(ctx, notary, skr); err != nil {
			return nil, err
		}
		stored, keys, err := f.checkResponse(serverName, skr)
		if err != nil {
			return nil, err
		}
		out = append(out, checkedResponse{stored, keys})
	}
	return out, nil
}

// checkNotarySignature requires a valid signature by the notary: with a
// pinned key if the configuration gives any, else with its published key.
// The signed form is computed once; a few signatures are tried at most.
func (f *KeyFetcher) checkNotarySignature(ctx context.Context, notary config.TrustedKeyServer, skr *mfed.ServerKeyResponse) error {
	msg, err := signedForm(skr.Raw)
	if err != nil {
		return err
	}
	if len(notary.VerifyKeys) > 0 {
		for keyID, key := range notary.VerifyKeys {
			if validPublicKey(id.SigningKey(key)) && verifyCanonical(skr.Signatures, notary.ServerName, id.KeyID(keyID), id.SigningKey(key), msg) == nil {
				return nil
			}
		}
		return fmt.Errorf("%w: no valid signature by a pinned key of the notary", ErrBadKeyResponse)
	}
	tried := 0
	for keyID := range skr.Signatures[notary.ServerName] {
		if !validKeyID(keyID) {
			continue
		}
		if tried++; tried > maxNotarySignatures {
			break
		}
		// The notary's own key, fetched directly only (never notary-of-notary).
		k, err := f.Store.GetServerKey(ctx, notary.ServerName, string(keyID))
		if err != nil || keyValidUntil(k).Before(f.now()) {
			if err := f.fetchDirect(ctx, notary.ServerName); err != nil {
				return err
			}
			if k, err = f.Store.GetServerKey(ctx, notary.ServerName, string(keyID)); err != nil {
				continue
			}
		}
		if k.ExpiredTS == 0 && verifyCanonical(skr.Signatures, notary.ServerName, keyID, id.SigningKey(k.VerifyKey), msg) == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: no valid signature by the notary", ErrBadKeyResponse)
}

// checkResponse validates a key response for serverName and returns what
// to store: server name, bounded counts of keys with valid IDs and 32-byte
// ed25519 keys, every verify key's self-signature (over the signed form,
// computed once), valid_until_ts capped at now + 7 days. Old keys with an
// invalid key or no expired_ts are left out.
func (f *KeyFetcher) checkResponse(serverName string, resp *mfed.ServerKeyResponse) (storage.ServerKeyResponse, []storage.ServerKey, error) {
	var none storage.ServerKeyResponse
	switch {
	case resp == nil || len(resp.Raw) == 0:
		return none, nil, fmt.Errorf("%w: empty", ErrBadKeyResponse)
	case resp.ServerName != serverName:
		return none, nil, fmt.Errorf("%w: server_name is %q", ErrBadKeyResponse, resp.ServerName)
	case len(resp.VerifyKeys) == 0:
		return none, nil, fmt.Errorf("%w: no verify_keys", ErrBadKeyResponse)
	case len(resp.VerifyKeys) > maxVerifyKeys:
		return none, nil, fmt.Errorf("%w: %d verify_keys, at most %d accepted", ErrBadKeyResponse, len(resp.VerifyKeys), maxVerifyKeys)
	case len(resp.OldVerifyKeys) > maxOldVerifyKeys:
		return none, nil, fmt.Errorf("%w: %d old_verify_keys, at most %d accepted", ErrBadKeyResponse, len(resp.OldVerifyKeys), maxOldVerifyKeys)
	case resp.ValidUntilTS.IsZero():
		return none, nil, fmt.Errorf("%w: no valid_until_ts", ErrBadKeyResponse)
	}
	// Key sizes first: ed25519.Verify panics on a public key of the wrong length.
	for keyID, k := range resp.VerifyKeys {
		if !validKeyID(keyID) {
			return none, nil, fmt.Errorf("%w: invalid key ID %.80q", ErrBadKeyResponse, keyID)
		}
		if !validPublicKey(k.Key) {
			return none, nil, fmt.Errorf("%w: key %s is not an ed25519 public key", ErrBadKeyResponse, keyID)
		}
	}
	for keyID := range resp.OldVerifyKeys {
		if !validKeyID(keyID) {
			return none, nil, fmt.Errorf("%w: invalid old key ID %.80q", ErrBadKeyResponse, keyID)
		}
	}
	if err := verifySelfSignatures(resp); err != nil {
		return none, nil, err
	}
	now := f.now()
	validUntil := min(resp.ValidUntilTS.UnixMilli(), now.Add(maxKeyValidity).UnixMilli())
	out := make([]storage.ServerKey, 0, len(resp.VerifyKeys)+len(resp.OldVerifyKeys))
	for keyID, k := range resp.VerifyKeys {
		out = append(out, storage.ServerKey{ServerName: serverName, KeyID: string(keyID), VerifyKey: string(k.Key),
			ValidUntilTS: validUntil, FetchedTS: now.UnixMilli()})
	}
	for keyID, k := range resp.OldVerifyKeys {
		if _, current := resp.VerifyKeys[keyID]; current || !validPublicKey(k.Key) || k.ExpiredTS.IsZero() {
			continue
		}
		out = append(out, storage.ServerKey{ServerName: serverName, KeyID: string(keyID), VerifyKey: string(k.Key),
			ExpiredTS: k.ExpiredTS.UnixMilli(), FetchedTS: now.UnixMilli()})
	}
	stored := storage.ServerKeyResponse{ServerName: serverName, ValidUntilTS: validUntil, FetchedTS: now.UnixMilli(), JSON: string(resp.Raw)}
	return stored, out, nil
}

// verifySelfSignatures checks that every verify key signed the response.
// mautrix's ServerKeyResponse.VerifySelfSignature does the same but
// canonicalizes the whole body again for each key.
func verifySelfSignatures(resp *mfed.ServerKeyResponse) error {
	msg, err := signedForm(resp.Raw)
	if err != nil {
		return err
	}
	for keyID, k := range resp.VerifyKeys {
		if err := verifyCanonical(resp.Signatures, resp.ServerName, keyID, k.Key, msg); err != nil {
			return err
		}
	}
	return nil
}

func validPublicKey(k id.SigningKey) bool {
	raw, err := base64.RawStdEncoding.DecodeString(string(k))
	return err == nil && len(raw) == ed25519.PublicKeySize
}
