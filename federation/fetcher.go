package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.mau.fi/util/jsontime"
	"golang.org/x/sync/singleflight"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// KeyStore persists remote servers' keys (implemented by *storage.DB).
type KeyStore interface {
	StoreServerKeys(ctx context.Context, keys []storage.ServerKey) error
	GetServerKey(ctx context.Context, serverName, keyID string) (*storage.ServerKey, error)
	ServerKeys(ctx context.Context, serverName string) ([]storage.ServerKey, error)
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
)

// maxKeyValidity caps a fetched valid_until_ts, as the spec requires (the
// lesser of valid_until_ts and 7 days ahead).
const maxKeyValidity = 7 * 24 * time.Hour

// Negative-cache backoff after a failed fetch: doubling from min to max.
const (
	minFetchBackoff = 30 * time.Second
	maxFetchBackoff = time.Hour
)

// KeyFetcher finds other servers' signing keys: from the store, else from
// the server itself (GET /_matrix/key/v2/server), else from the configured
// notaries (POST /_matrix/key/v2/query). Every response is checked (server
// name, self-signatures, notary signatures) before any key is stored.
// Failures are cached per server with exponential backoff, and concurrent
// lookups of one server share one fetch. It implements roomserver.KeyGetter.
type KeyFetcher struct {
	Own      *KeyRing
	Store    KeyStore
	Client   KeyClient
	Notaries []config.TrustedKeyServer
	Policy   Policy
	// Timeout bounds a GetKey call (which has no context of its own).
	Timeout time.Duration
	Now     func() time.Time

	group    singleflight.Group
	mu       sync.Mutex
	failures map[string]*fetchFailure
}

type fetchFailure struct {
	count int
	until time.Time
	err   error
}

func (f *KeyFetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
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

// maxTrackedFailures bounds the per-server backoff records.
const maxTrackedFailures = 10000

// refresh fetches serverName's keys (directly, then, if viaNotaries and the
// key is still missing or not valid long enough, through the notaries),
// honouring the policy and the failure backoff; concurrent refreshes of one
// server share one fetch.
func (f *KeyFetcher) refresh(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time, viaNotaries bool) error {
	if !f.Policy.AllowServer(ctx, serverName, PurposeKeyFetch) {
		return ErrServerDenied
	}
	if err := f.backingOff(serverName); err != nil {
		return err
	}
	flight := fmt.Sprintf("%t\x00%s", viaNotaries, serverName)
	reached, err, _ := f.group.Do(flight, func() (any, error) {
		// Detached from the first caller's context so that its cancellation
		// does not fail the others sharing the fetch; still bounded.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
		defer cancel()
		err := f.fetchDirect(fctx, serverName)
		reached := err == nil
		if reached && f.has(fctx, serverName, keyID, minValidUntil) || !viaNotaries || len(f.Notaries) == 0 {
			return reached, err
		}
		if nerr := f.fetchFromNotaries(fctx, serverName, keyID, minValidUntil); nerr != nil {
			return reached, errors.Join(err, nerr)
		}
		return reached, nil
	})
	// Back off only when the server could not be asked. A key ID it does not
	// have is an answer, not an outage: an unauthenticated X-Matrix header
	// names any key ID it likes, and must not cut us off from a real partner.
	if r, _ := reached.(bool); !r || err == nil {
		f.recordOutcome(serverName, err)
	}
	return err
}

func (f *KeyFetcher) has(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time) bool {
	k, err := f.Store.GetServerKey(ctx, serverName, string(keyID))
	return err == nil && !keyValidUntil(k).Before(minValidUntil)
}

func (f *KeyFetcher) backingOff(serverName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl := f.failures[serverName]; fl != nil && f.now().Before(fl.until) {
		return fmt.Errorf("%w (until %s): %v", ErrFetchBackoff, fl.until.Format(time.RFC3339), fl.err)
	}
	return nil
}

func (f *KeyFetcher) recordOutcome(serverName string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failures, serverName)
		return
	}
	if f.failures == nil {
		f.failures = map[string]*fetchFailure{}
	}
	if len(f.failures) >= maxTrackedFailures {
		// Server names come from unauthenticated input: keep the map bounded.
		now := f.now()
		for name, fl := range f.failures {
			if now.After(fl.until) {
				delete(f.failures, name)
			}
		}
		if len(f.failures) >= maxTrackedFailures {
			clear(f.failures)
		}
	}
	fl := f.failures[serverName]
	if fl == nil {
		fl = &fetchFailure{}
		f.failures[serverName] = fl
	}
	fl.count++
	backoff := minFetchBackoff << min(fl.count-1, 10)
	fl.until, fl.err = f.now().Add(min(backoff, maxFetchBackoff)), err
	slog.Warn("fetching server keys failed", "server", serverName, "failures", fl.count, "retry_after", fl.until, "err", err)
}

// fetchDirect asks the server itself.
func (f *KeyFetcher) fetchDirect(ctx context.Context, serverName string) error {
	resp, err := f.Client.ServerKeys(ctx, serverName)
	if err != nil {
		return fmt.Errorf("fetching keys from %s: %w", serverName, err)
	}
	keys, err := f.checkResponse(serverName, resp)
	if err != nil {
		return fmt.Errorf("keys from %s: %w", serverName, err)
	}
	return f.Store.StoreServerKeys(ctx, keys)
}

// fetchFromNotaries asks each notary in turn until one answers with the key.
func (f *KeyFetcher) fetchFromNotaries(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time) error {
	req := &mfed.ReqQueryKeys{ServerKeys: map[string]map[id.KeyID]mfed.QueryKeysCriteria{
		serverName: {keyID: {MinimumValidUntilTS: jsontime.UM(minValidUntil)}},
	}}
	var errs []error
	for _, notary := range f.Notaries {
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
		var keys []storage.ServerKey
		for _, skr := range resp.ServerKeys {
			if skr == nil || skr.ServerName != serverName {
				continue // a notary may add others; only what we asked for is taken
			}
			if err := f.checkNotarySignature(ctx, notary, skr.Raw); err != nil {
				errs = append(errs, fmt.Errorf("notary %s: %w", notary.ServerName, err))
				keys = nil
				break
			}
			k, err := f.checkResponse(serverName, skr)
			if err != nil {
				errs = append(errs, fmt.Errorf("notary %s: %w", notary.ServerName, err))
				keys = nil
				break
			}
			keys = append(keys, k...)
		}
		if err := f.Store.StoreServerKeys(ctx, keys); err != nil {
			return err
		}
		if f.has(ctx, serverName, keyID, minValidUntil) {
			return nil
		}
		if len(keys) > 0 {
			errs = append(errs, fmt.Errorf("notary %s: no key %s valid long enough", notary.ServerName, keyID))
		}
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w: no notary knows %s of %s", ErrKeyNotFound, keyID, serverName)
	}
	return errors.Join(errs...)
}

// checkNotarySignature requires a valid signature by the notary: with a
// pinned key if the configuration gives any, else with its published key.
func (f *KeyFetcher) checkNotarySignature(ctx context.Context, notary config.TrustedKeyServer, raw json.RawMessage) error {
	if len(notary.VerifyKeys) > 0 {
		for keyID, key := range notary.VerifyKeys {
			if validPublicKey(id.SigningKey(key)) && signutil.VerifyJSON(notary.ServerName, id.KeyID(keyID), id.SigningKey(key), raw) == nil {
				return nil
			}
		}
		return fmt.Errorf("%w: no valid signature by a pinned key of the notary", ErrBadKeyResponse)
	}
	var signed struct {
		Signatures map[string]map[id.KeyID]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &signed); err != nil {
		return fmt.Errorf("%w: %v", ErrBadKeyResponse, err)
	}
	for keyID := range signed.Signatures[notary.ServerName] {
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
		if k.ExpiredTS == 0 && signutil.VerifyJSON(notary.ServerName, keyID, id.SigningKey(k.VerifyKey), raw) == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: no valid signature by the notary", ErrBadKeyResponse)
}

// checkResponse validates a key response for serverName and returns the
// rows to store: server name, every verify key's self-signature, key sizes,
// valid_until_ts capped at now + 7 days.
func (f *KeyFetcher) checkResponse(serverName string, resp *mfed.ServerKeyResponse) ([]storage.ServerKey, error) {
	if resp == nil || len(resp.Raw) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadKeyResponse)
	}
	if resp.ServerName != serverName {
		return nil, fmt.Errorf("%w: server_name is %q", ErrBadKeyResponse, resp.ServerName)
	}
	if len(resp.VerifyKeys) == 0 {
		return nil, fmt.Errorf("%w: no verify_keys", ErrBadKeyResponse)
	}
	if resp.ValidUntilTS.IsZero() {
		return nil, fmt.Errorf("%w: no valid_until_ts", ErrBadKeyResponse)
	}
	// Key sizes first: ed25519.Verify panics on a public key of the wrong length.
	for keyID, k := range resp.VerifyKeys {
		if !validPublicKey(k.Key) {
			return nil, fmt.Errorf("%w: key %s is not an ed25519 public key", ErrBadKeyResponse, keyID)
		}
	}
	if err := resp.VerifySelfSignature(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKeyResponse, err)
	}
	now := f.now()
	validUntil := resp.ValidUntilTS.Time
	if limit := now.Add(maxKeyValidity); validUntil.After(limit) {
		validUntil = limit
	}
	raw := string(resp.Raw)
	var out []storage.ServerKey
	for keyID, k := range resp.VerifyKeys {
		if !validPublicKey(k.Key) {
			return nil, fmt.Errorf("%w: key %s is not an ed25519 public key", ErrBadKeyResponse, keyID)
		}
		out = append(out, storage.ServerKey{ServerName: serverName, KeyID: string(keyID), VerifyKey: string(k.Key),
			ValidUntilTS: validUntil.UnixMilli(), KeyJSON: raw, FetchedTS: now.UnixMilli()})
	}
	for keyID, k := range resp.OldVerifyKeys {
		if _, current := resp.VerifyKeys[keyID]; current || !validPublicKey(k.Key) || k.ExpiredTS.IsZero() {
			continue
		}
		out = append(out, storage.ServerKey{ServerName: serverName, KeyID: string(keyID), VerifyKey: string(k.Key),
			ExpiredTS: k.ExpiredTS.UnixMilli(), KeyJSON: raw, FetchedTS: now.UnixMilli()})
	}
	return out, nil
}

func validPublicKey(k id.SigningKey) bool {
	raw, err := base64.RawStdEncoding.DecodeString(string(k))
	return err == nil && len(raw) == ed25519.PublicKeySize
}
