package federation

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/internal/config"
)

// versionServer is a TLS federation server answering /version on addr
// (its certificate is valid for 127.0.0.1); the returned file holds the
// certificate, for federation.trusted_ca_file.
func versionServer(t *testing.T, addr string) (*httptest.Server, string) {
	t.Helper()
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"server":{"name":"Private","version":"1"}}`)
	}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	ts.Listener.Close()
	ts.Listener = ln
	ts.StartTLS()
	t.Cleanup(ts.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ts, ca
}

// federation.allowed_private_networks admits discovered servers in the
// listed ranges, and only there: by default 127.0.0.1 is refused; listed as
// 127.0.0.1/32 it is reached (also through its IPv4-mapped form's check),
// while 127.0.0.2, next to it, stays refused at connect time.
func TestAllowedPrivateNetworks(t *testing.T) {
	ts, ca := versionServer(t, "127.0.0.1:0")
	neighbour, _ := versionServer(t, "127.0.0.2:0")
	server := ts.Listener.Addr().String()
	neighbourServer := neighbour.Listener.Addr().String()

	client := func(networks ...string) *mfed.Client {
		cfg := config.Default()
		cfg.ServerName = "me.test"
		cfg.Federation.TrustedCAFile = ca
		cfg.Federation.AllowedPrivateNetworks = networks
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(cfg, mfed.GenerateSigningKey(), AllowAll{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	refused := func(c *mfed.Client, server string) {
		t.Helper()
		if _, err := c.Version(context.Background(), server); !errors.Is(err, ErrNonPublicAddress) {
			t.Errorf("%s: want a refusal for a non-public address, got %v", server, err)
		}
	}

	refused(client(), server) // the default: public addresses only
	refused(client(), neighbourServer)

	c := client("127.0.0.1/32", "10.20.0.0/16")
	if v, err := c.Version(context.Background(), server); err != nil || v.Server.Name != "Private" {
		t.Fatalf("%s in an allowed range: %+v %v", server, v, err)
	}
	refused(c, neighbourServer)
	if !c.AllowIP(net.ParseIP("::ffff:127.0.0.1")) || c.AllowIP(net.ParseIP("::ffff:127.0.0.2")) {
		t.Error("IPv4-mapped addresses must be judged as the IPv4 address they carry")
	}

	// The connect-time check and the .well-known dialer follow the same
	// ranges (checked on the address dialled, without connecting).
	d := guardedDialer(func(a netip.Addr) bool { return c.AllowIP(a.AsSlice()) })
	for addr, want := range map[string]bool{
		"10.20.3.4:8448": true, "[::ffff:10.20.3.4]:8448": true, "10.21.0.1:8448": false, "192.168.1.1:8448": false,
		"169.254.169.254:80": false, "[::1]:8448": false, "0.0.0.0:8448": false, "8.8.8.8:8448": true,
	} {
		err := d.Control("tcp", addr, nil)
		if (err == nil) != want || (err != nil && !errors.Is(err, ErrNonPublicAddress)) {
			t.Errorf("dial %s: %v, want allowed=%v", addr, err, want)
		}
	}
}
