package servertls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// WriteSelfSigned writes a self-signed certificate for names (DNS names or
// IP addresses) and its key as PEM files, and returns the certificate.
func writeSelfSigned(t *testing.T, certFile, keyFile, cn string, names ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Written to a temporary name and renamed, as a renewal tool does.
	for file, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(file+".tmp", pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// serve runs a TLS listener on loopback answering each connection's first
// byte with "ok", until the test ends.
func serve(t *testing.T, conf *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write([]byte("ok")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// handshake connects and returns the connection and the leaf it was shown.
func handshake(t *testing.T, addr string, conf *tls.Config) (*tls.Conn, *x509.Certificate) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.ConnectionState().PeerCertificates[0]
}

func ping(t *testing.T, c *tls.Conn) {
	t.Helper()
	buf := make([]byte, 2)
	if _, err := c.Write([]byte("?")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
		t.Fatalf("connection after reload: %q %v", buf, err)
	}
}

// Swapping the files and reloading: new handshakes see the new
// certificate, a connection opened before keeps working; a reload from a
// broken file fails and keeps the certificate in use.
func TestFilesReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a := writeSelfSigned(t, certFile, keyFile, "first", "127.0.0.1")
	f, err := LoadFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, f.TLSConfig())
	client := &tls.Config{InsecureSkipVerify: true} // the test compares the certificates itself
	old, got := handshake(t, addr, client)
	if !got.Equal(a) {
		t.Fatalf("first handshake shown %q", got.Subject.CommonName)
	}

	b := writeSelfSigned(t, certFile, keyFile, "second", "127.0.0.1")
	if _, got := handshake(t, addr, client); !got.Equal(a) {
		t.Fatal("the certificate changed before the reload")
	}
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, got := handshake(t, addr, client); !got.Equal(b) {
		t.Fatalf("after reload shown %q, want second", got.Subject.CommonName)
	}
	ping(t, old) // not dropped

	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil {
		t.Fatal("reload of a broken key succeeded")
	}
	if _, got := handshake(t, addr, client); !got.Equal(b) {
		t.Fatalf("after a failed reload shown %q, want second", got.Subject.CommonName)
	}
	if _, err := LoadFiles(filepath.Join(dir, "missing.pem"), keyFile); err == nil {
		t.Fatal("LoadFiles of a missing file succeeded")
	}
}
