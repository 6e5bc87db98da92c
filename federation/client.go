package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"go.mau.fi/util/exhttp"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/netguard"
)

// Outbound federation is mautrix's federation.Client (X-Matrix request
// signing, typed endpoints) with its transport replaced by ours:
//   - a server name outside the spec grammar is refused before anything;
//   - servers named in federation.hosts go to the mapped address (HTTPS, or
//     plain HTTP for federation.insecure_http_hosts), with the server name as
//     Host header and TLS name — this is how tests federate on one machine;
//   - every other server is discovered (resolver: .well-known, SRV
//     _matrix-fed._tcp / _matrix._tcp, port 8448; mautrix's pieces, with a
//     bounded cache, short caching of failures and a checked m.server) and
//     reached only at public addresses: the dialer refuses private and
//     loopback addresses at connect time, and so does the .well-known fetch
//     — except in the ranges of federation.allowed_private_networks, which
//     the operator listed for federation over an internal network;
//   - every response body is capped by endpoint (responseLimit).

// ErrNonPublicAddress: a discovered server resolved to a private address.
var ErrNonPublicAddress = errors.New("refusing to connect to a non-public address")

// Timeouts of outbound requests.
const (
	dialTimeout      = 10 * time.Second
	requestTimeout   = 60 * time.Second
	wellKnownTimeout = 10 * time.Second
)

// NewClient builds the outbound federation client: requests are signed with
// key as cfg.ServerName, routed as described above, and refused for servers
// the policy denies (purpose "outbound": a backstop behind the checks each
// caller makes with its own purpose).
func NewClient(cfg *config.Config, key *mfed.SigningKey, policy Policy) (*mfed.Client, error) {
	tlsConf, err := tlsConfig(cfg.Federation.TrustedCAFile)
	if err != nil {
		return nil, err
	}
	settings := exhttp.SensibleClientSettings.
		WithDialTimeout(dialTimeout).
		WithGlobalTimeout(requestTimeout).
		WithTLSConfig(tlsConf)
	c := mfed.NewClient(cfg.ServerName, key, mfed.NewInMemoryCache(), settings)
	c.UserAgent = "Myelin/" + SoftwareVersion
	allowed := netguard.PublicOrIn(cfg.Federation.AllowedPrivatePrefixes())
	c.AllowIP = func(ip net.IP) bool { // checked on every connect, after resolution
		a, ok := netip.AddrFromSlice(ip)
		return ok && allowed(a)
	}
	c.AllowServer = func(server string) bool {
		return policy.AllowServer(context.Background(), server, PurposeOutbound)
	}
	// The transport caps each response by endpoint; mautrix's own cap stays
	// as the ceiling above the largest of them.
	c.ResponseSizeLimit = max(c.ResponseSizeLimit, ResponseLimitSendJoin)
	discovered := &discoveredTransport{
		resolver: newResolver(&mfed.ResolveServerNameOpts{HTTPClient: wellKnownClient(tlsConf, allowed), DNSClient: net.DefaultResolver}),
		dial:     guardedDialer(allowed).DialContext,
	}
	discovered.transport = settings.WithDial(discovered.dialResolved).Configure(&http.Transport{})
	rt := &routingTransport{
		hosts:      cfg.Federation.Hosts,
		insecure:   map[string]bool{},
		discovered: discovered,
	}
	for _, name := range cfg.Federation.InsecureHTTPHosts {
		rt.insecure[name] = true
	}
	rt.fixed = settings.WithDial(rt.dialFixed).Configure(&http.Transport{})
	c.HTTP.Transport = jsonContentType{next: &limitTransport{next: rt}}
	return c, nil
}

// jsonContentType labels request bodies application/json. mautrix's client
// sends its JSON bodies (send_join, get_missing_events, /send …) without a
// Content-Type; the spec says requesting servers should supply it, and
// gomatrixserverlib-based servers (Dendrite, Complement's test servers)
// refuse a body without it with a 400.
type jsonContentType struct {
	next http.RoundTripper
}

func (t jsonContentType) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody && req.Header.Get("Content-Type") == "" {
		req = req.Clone(req.Context()) // a RoundTripper must not modify its request
		req.Header.Set("Content-Type", "application/json")
	}
	return t.next.RoundTrip(req)
}

// tlsConfig trusts the system roots plus caFile's certificates.
func tlsConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return &tls.Config{MinVersion: tls.VersionTLS12}, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("federation.trusted_ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("federation.trusted_ca_file: no certificate in %s", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// guardedDialer refuses, at connect time, any address allowed refuses:
// public addresses and the configured private ranges pass (no DNS-rebinding
// window: the check is on the address actually dialled).
func guardedDialer(allowed func(netip.Addr) bool) *net.Dialer {
	return &net.Dialer{Timeout: dialTimeout, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !allowed(ap.Addr()) {
			return fmt.Errorf("%s: %w", address, ErrNonPublicAddress)
		}
		return nil
	}}
}

// wellKnownClient fetches /.well-known/matrix/server: the addresses allowed
// admits only, a few redirects (the spec asks to follow them), a short timeout.
func wellKnownClient(tlsConf *tls.Config, allowed func(netip.Addr) bool) *http.Client {
	return &http.Client{
		Timeout: wellKnownTimeout,
		Transport: &http.Transport{
			DialContext:         guardedDialer(allowed).DialContext,
			TLSClientConfig:     tlsConf,
			TLSHandshakeTimeout: wellKnownTimeout,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many .well-known redirects")
			}
			if req.URL.Scheme != "https" {
				return errors.New(".well-known redirected to a non-https URL")
			}
			return nil
		},
	}
}

type fixedTargetKey struct{}

// routingTransport sends requests for statically mapped servers to their
// mapped address and the rest through discovery.
type routingTransport struct {
	hosts      map[string]string // server name → host:port
	insecure   map[string]bool   // server names spoken to in plain HTTP
	fixed      *http.Transport
	discovered http.RoundTripper
}

func (t *routingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "matrix-federation" {
		return nil, fmt.Errorf("unsupported scheme %q", req.URL.Scheme)
	}
	server := req.URL.Host
	if err := config.ValidateServerName(server); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadServerName, err)
	}
	addr, ok := t.hosts[server]
	if !ok {
		return t.discovered.RoundTrip(req)
	}
	r := req.Clone(context.WithValue(req.Context(), fixedTargetKey{}, addr))
	r.URL.Scheme = "https"
	if t.insecure[server] {
		r.URL.Scheme = "http"
	}
	r.Host = server // the Host header and TLS name are the server name, as after discovery
	return t.fixed.RoundTrip(r)
}

// dialFixed connects to the mapped address of a statically routed server.
func (t *routingTransport) dialFixed(ctx context.Context, network, _ string) (net.Conn, error) {
	addr, ok := ctx.Value(fixedTargetKey{}).(string)
	if !ok {
		return nil, errors.New("no fixed federation target in context")
	}
	d := net.Dialer{Timeout: dialTimeout}
	return d.DialContext(ctx, network, addr)
}
