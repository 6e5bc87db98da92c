// Package servertls provides the certificates of Myelin's own TLS listener
// (listen.federation): a certificate and key read from PEM files and swapped
// atomically on reload (SIGHUP), or certificates obtained and renewed through
// ACME (golang.org/x/crypto/acme/autocert). Either way new handshakes pick up
// the current certificate through tls.Config.GetCertificate, so a reload
// drops no connection.
package servertls

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// Source gives the listener its TLS configuration and can be reloaded.
type Source interface {
	// TLSConfig is the listener's configuration; its GetCertificate reads
	// the current certificate at each handshake.
	TLSConfig() *tls.Config
	// Reload rereads the certificate (files) or does nothing (ACME renews
	// on its own). On error the previous certificate stays in use.
	Reload() error
}

// Files is a certificate and key loaded from PEM files.
type Files struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// LoadFiles reads certFile (the chain, leaf first) and keyFile.
func LoadFiles(certFile, keyFile string) (*Files, error) {
	f := &Files{certFile: certFile, keyFile: keyFile}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload rereads both files and swaps the certificate in; a failure keeps
// the one in use (a half-written renewal must not take the listener down).
func (f *Files) Reload() error {
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("loading TLS certificate %s and key %s: %w", f.certFile, f.keyFile, err)
	}
	f.cert.Store(&cert)
	return nil
}

// GetCertificate returns the current certificate, whatever the client asked.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.cert.Load(), nil
}

// TLSConfig serves the current certificate, TLS 1.2 and up, HTTP/2 and 1.1.
func (f *Files) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: f.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
}

// ACMEOptions configure automatic certificates.
type ACMEOptions struct {
	// DirectoryURL is the ACME server's directory; empty: Let's Encrypt.
	DirectoryURL string
	// Email is given to the ACME server as the account's contact (optional).
	Email string
	// CacheDir keeps the account key and certificates across restarts.
	CacheDir string
	// Domains are the only names certificates are requested for.
	Domains []string
	// HTTPClient talks to the ACME server (nil: the default client); tests
	// pass one trusting a test CA.
	HTTPClient *http.Client
}

// ACME obtains and renews certificates on demand, answering TLS-ALPN-01
// challenges on the listener itself and HTTP-01 challenges through
// HTTPHandler when an HTTP listener on port 80 serves it.
type ACME struct {
	Manager *autocert.Manager
}

// NewACME builds the certificate manager; the first handshake for one of
// the domains obtains a certificate (cached in CacheDir), later ones renew
// it ahead of expiry.
func NewACME(o ACMEOptions) (*ACME, error) {
	if len(o.Domains) == 0 {
		return nil, errors.New("ACME needs at least one domain")
	}
	if o.CacheDir == "" {
		return nil, errors.New("ACME needs a cache directory")
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(o.CacheDir),
		HostPolicy: autocert.HostWhitelist(o.Domains...),
		Email:      o.Email,
		Client:     &acme.Client{DirectoryURL: o.DirectoryURL, HTTPClient: o.HTTPClient},
	}
	if m.Client.DirectoryURL == "" {
		m.Client.DirectoryURL = autocert.DefaultACMEDirectory
	}
	return &ACME{Manager: m}, nil
}

// TLSConfig is autocert's: certificates on demand, and the acme-tls/1
// protocol for TLS-ALPN-01.
func (a *ACME) TLSConfig() *tls.Config {
	c := a.Manager.TLSConfig()
	c.MinVersion = tls.VersionTLS12
	return c
}

// Reload does nothing: autocert renews certificates itself.
func (a *ACME) Reload() error { return nil }

// HTTPHandler answers HTTP-01 challenges and redirects everything else to
// HTTPS (for a listener on port 80).
func (a *ACME) HTTPHandler() http.Handler { return a.Manager.HTTPHandler(nil) }
