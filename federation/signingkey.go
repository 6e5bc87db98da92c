// Package federation is the server-server API as far as it exists: signing
// keys, the key fetcher and notary, X-Matrix request signing and
// verification, server discovery, the server-level policy (which servers the
// server talks to, per purpose), /version and profile queries. There is no
// room federation yet: no outbound event queue, no per-room policy.
package federation

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"maunium.net/go/mautrix/federation"
)

// LoadOrGenerateSigningKey reads the server's ed25519 signing key from path
// (Synapse's "ed25519 <id> <seed>" format), generating and persisting a new
// one on first start.
func LoadOrGenerateSigningKey(path string) (*federation.SigningKey, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		key, err := federation.ParseSynapseKey(strings.TrimSpace(string(raw)))
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	key := newSigningKey()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating key directory: %w", err)
	}
	// O_EXCL: never overwrite a key another process wrote meanwhile.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("writing signing key: %w", err)
	}
	if _, err := f.WriteString(key.SynapseString() + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing signing key: %w", err)
	}
	return key, nil
}
