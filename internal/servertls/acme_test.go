package servertls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// pebbleBinary finds Let's Encrypt's test ACME server (installed by
// .ci/run: go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3):
// $PEBBLE, then PATH, then $GOBIN / $GOPATH/bin / ~/go/bin. In CI a missing
// Pebble is a failure, elsewhere the test is skipped.
func pebbleBinary(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("PEBBLE")}
	if p, err := exec.LookPath("pebble"); err == nil {
		candidates = append(candidates, p)
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(os.Getenv("GOPATH"), "bin")} {
		if dir != "" && dir != "bin" {
			candidates = append(candidates, filepath.Join(dir, "pebble"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, "go", "bin", "pebble"))
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); c != "" && err == nil && !st.IsDir() {
			return c
		}
	}
	msg := "Pebble (the ACME test server) is not installed: go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3, or set PEBBLE"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPebble runs Pebble on loopback, validating nothing
// (PEBBLE_VA_ALWAYS_VALID), and returns its directory URL, a client that
// trusts its HTTPS listener, and the root that signs the certificates it
// issues.
func startPebble(t *testing.T) (string, *http.Client, *x509.CertPool) {
	bin := pebbleBinary(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "pebble-cert.pem"), filepath.Join(dir, "pebble-key.pem")
	listenerCert := writeSelfSigned(t, certFile, keyFile, "pebble", "127.0.0.1", "localhost")
	apiPort, mgmtPort := freePort(t), freePort(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": fmt.Sprintf("127.0.0.1:%d", apiPort), "managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate": certFile, "privateKey": keyFile, "httpPort": freePort(t), "tlsPort": freePort(t),
		"ocspResponderURL": "", "externalAccountBindingRequired": false, "keyAlgorithm": "ecdsa",
		"profiles": map[string]any{"default": map[string]any{"description": "test", "validityPeriod": 7776000}},
	}}
	raw, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-config", confFile)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_ALWAYS_VALID=1", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=100")
	logFile, err := os.Create(filepath.Join(dir, "pebble.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("pebble log:\n%s", log)
		}
	})

	pool := x509.NewCertPool()
	pool.AddCert(listenerCert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	directory := fmt.Sprintf("https://127.0.0.1:%d/dir", apiPort)
	var root []byte
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err == nil {
			root, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	issuers := x509.NewCertPool()
	if !issuers.AppendCertsFromPEM(root) {
		t.Fatalf("pebble root: %q", root)
	}
	return directory, client, issuers
}

// Automatic certificates end to end against Pebble: the first handshake for
// the domain obtains a certificate through ACME, the listener serves it, a
// TLS client verifying against Pebble's root accepts it; names outside
// listen.acme.domains get none; the certificate is cached in CacheDir.
func TestACMEWithPebble(t *testing.T) {
	directory, pebbleClient, issuers := startPebble(t)
	cache := filepath.Join(t.TempDir(), "acme")
	a, err := NewACME(ACMEOptions{DirectoryURL: directory, Email: "admin@myelin.test", CacheDir: cache,
		Domains: []string{"myelin.test"}, HTTPClient: pebbleClient})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, a.TLSConfig())

	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 60 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: "myelin.test", RootCAs: issuers})
	if err != nil {
		t.Fatalf("handshake for myelin.test: %v", err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if err := leaf.VerifyHostname("myelin.test"); err != nil || time.Until(leaf.NotAfter) < 24*time.Hour {
		t.Fatalf("certificate for %v until %s: %v", leaf.DNSNames, leaf.NotAfter, err)
	}
	ping(t, conn)

	if c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "other.test", InsecureSkipVerify: true}); err == nil {
		c.Close()
		t.Fatal("a certificate was served for a name outside the configured domains")
	}
	if _, err := os.Stat(filepath.Join(cache, "myelin.test")); err != nil {
		t.Fatalf("certificate not cached: %v", err)
	}
	if _, err := NewACME(ACMEOptions{CacheDir: cache}); err == nil {
		t.Fatal("NewACME without domains succeeded")
	}
}
