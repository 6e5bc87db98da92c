package tests

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestFederationAllowedPrivateNetworksNotForPreviews: with
// federation.allowed_private_networks listing loopback, the server's
// outbound federation reaches a server on 127.0.0.1, while URL previews of
// the same address stay refused (they follow media.url_preview_allow_private
// only). One backend: nothing here touches the store beyond registration.
func TestFederationAllowedPrivateNetworksNotForPreviews(t *testing.T) {
	remote := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/federation/v1/version" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"server":{"name":"Internal","version":"1"}}`)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, `<html><head><meta property="og:title" content="internal secret"></head></html>`)
	}))
	t.Cleanup(remote.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: remote.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	remoteName := remote.Listener.Addr().String() // 127.0.0.1:port, an IP-literal server name

	srv := testserver.Start(t, "sqlite", testserver.Options{ServerName: "private.test", Configure: func(c *config.Config) {
		c.Federation.AllowedPrivateNetworks = []string{"127.0.0.0/8"}
		c.Federation.TrustedCAFile = ca
		c.Media.URLPreviews = true
	}})
	v, err := srv.Federation.Client.Version(context.Background(), remoteName)
	if err != nil || v.Server.Name != "Internal" {
		t.Fatalf("federation to %s in an allowed private range: %+v %v", remoteName, v, err)
	}
	alice := srv.Register(t, "alice")
	for _, u := range []string{"http://" + remoteName + "/page", remote.URL + "/page"} {
		r := rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(u), alice.AccessToken, "", nil)
		if r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
			t.Errorf("preview of %s with federation's private networks allowed: %d %s", u, r.Status, r.Raw)
		}
	}
}
