package homeserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/keyserver"
)

// keysRemote backs keyserver.Federation with the transport's client: other
// servers' users' device keys, one-time keys and device lists. Answers are
// bounded in size (keysResponseLimit); the keyserver bounds the time and
// keeps of each answer only what is about the asked server's own users.
type keysRemote struct{ c *mfed.Client }

// keysResponseLimit caps one answer: a query for many users with many
// devices each is larger than the default 1 MiB of the transport.
const keysResponseLimit int64 = 16 << 20

func (r keysRemote) do(ctx context.Context, server, method string, path mfed.URLPath, req, resp any) error {
	_, _, err := r.c.MakeFullRequest(federation.WithResponseLimit(ctx, keysResponseLimit), mfed.RequestParams{
		ServerName: server, Method: method, Path: path, Authenticate: true, RequestJSON: req, ResponseJSON: resp})
	return err
}

// QueryKeys is POST /_matrix/federation/v1/user/keys/query.
func (r keysRemote) QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*keyserver.QueryResponse, error) {
	q := map[string][]string{}
	for u, devs := range deviceKeys {
		if devs == nil {
			devs = []string{}
		}
		q[u] = devs
	}
	var resp keyserver.QueryResponse
	if err := r.do(ctx, server, http.MethodPost, mfed.URLPath{"v1", "user", "keys", "query"},
		map[string]any{"device_keys": q}, &resp); err != nil {
		return nil, fmt.Errorf("querying keys on %s: %w", server, err)
	}
	return &resp, nil
}

// ClaimKeys is POST /_matrix/federation/v1/user/keys/claim.
func (r keysRemote) ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var resp struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := r.do(ctx, server, http.MethodPost, mfed.URLPath{"v1", "user", "keys", "claim"},
		map[string]any{"one_time_keys": oneTimeKeys}, &resp); err != nil {
		return nil, fmt.Errorf("claiming keys on %s: %w", server, err)
	}
	return resp.OneTimeKeys, nil
}

// UserDevices is GET /_matrix/federation/v1/user/devices/{userId}.
func (r keysRemote) UserDevices(ctx context.Context, server, userID string) (*keyserver.UserDevicesResponse, error) {
	var resp keyserver.UserDevicesResponse
	if err := r.do(ctx, server, http.MethodGet, mfed.URLPath{"v1", "user", "devices", userID}, nil, &resp); err != nil {
		return nil, fmt.Errorf("fetching %s's devices: %w", userID, err)
	}
	return &resp, nil
}

// keysFederation is the keyserver's way to other servers: none with
// federation off.
func (s *Server) keysFederation(t *federation.Transport) keyserver.Federation {
	if !s.Config.FederationEnabled() {
		return nil
	}
	return residentKeys{keysRemote{t.Client}, s.outboundGate()}
}
