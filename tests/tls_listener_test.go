package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// writeCert writes a self-signed certificate for 127.0.0.1 named cn, and its
// key, to certFile and keyFile.
func writeCert(t *testing.T, certFile, keyFile, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestTLSListener: listen.federation with certificate files serves the key
// and federation endpoints (and the client API) over TLS; after the files
// are replaced, ReloadTLS (what SIGHUP calls) makes new handshakes present
// the new certificate while a connection opened before keeps working.
func TestTLSListener(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCert(t, certFile, keyFile, "first")
	srv := testserver.Start(t, "sqlite", testserver.Options{ServerName: "tls.test", Configure: func(c *config.Config) {
		c.Listen.Federation = "127.0.0.1:0"
		c.Listen.TLSCertificate, c.Listen.TLSKey = certFile, keyFile
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln) }()
	base := "https://" + ln.Addr().String()

	// A client that trusts whichever certificate it is told to.
	clientFor := func(cert *x509.Certificate) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	get := func(c *http.Client, path string) (int, map[string]any) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	old := clientFor(first)
	if status, body := get(old, "/_matrix/key/v2/server"); status != 200 || body["server_name"] != "tls.test" {
		t.Fatalf("keys over TLS: %d %v", status, body)
	}
	if status, body := get(old, "/_matrix/federation/v1/version"); status != 200 || body["server"] == nil {
		t.Fatalf("federation version over TLS: %d %v", status, body)
	}
	if status, _ := get(old, "/_matrix/client/versions"); status != 200 {
		t.Fatalf("client versions over TLS: %d", status)
	}

	second := writeCert(t, certFile, keyFile, "second")
	if err := srv.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if status, _ := get(clientFor(second), "/_matrix/key/v2/server"); status != 200 {
		t.Fatalf("keys with the new certificate: %d", status)
	}
	if _, err := clientFor(first).Get(base + "/_matrix/key/v2/server"); err == nil {
		t.Fatal("a new handshake still presented the old certificate")
	}
	// The first client's kept-alive connection was not dropped.
	if status, _ := get(old, "/_matrix/federation/v1/version"); status != 200 {
		t.Fatalf("old connection after reload: %d", status)
	}

	// A broken file: the reload fails, the second certificate stays.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.ReloadTLS(); err == nil {
		t.Fatal("reload of a broken certificate succeeded")
	}
	if status, _ := get(clientFor(second), "/_matrix/key/v2/server"); status != 200 {
		t.Fatalf("after a failed reload: %d", status)
	}
}
