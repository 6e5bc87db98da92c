package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// getWellKnownSupport fetches /.well-known/matrix/support without a token.
func getWellKnownSupport(t *testing.T, srv *testserver.Server) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(srv.URL + "/.well-known/matrix/support")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("support: %d, not JSON: %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, body
}

// TestWellKnownSupport: /.well-known/matrix/support (spec v1.10, MSC1929)
// serves the config's support section as the spec shapes it; 404 M_NOT_FOUND
// when none is configured.
func TestWellKnownSupport(t *testing.T) {
	t.Run("unset", func(t *testing.T) {
		srv := testserver.Start(t, "sqlite")
		if status, body := getWellKnownSupport(t, srv); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Errorf("unset: %d %v, want 404 M_NOT_FOUND", status, body)
		}
	})
	t.Run("configured", func(t *testing.T) {
		srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
			c.Support = config.Support{SupportPage: "https://example.org/help", Contacts: []config.SupportContact{
				{MatrixID: "@admin:example.org", EmailAddress: "admin@example.org", Role: "m.role.admin"},
				{EmailAddress: "security@example.org", Role: "m.role.security"},
			}}
		}})
		status, body := getWellKnownSupport(t, srv)
		want := map[string]any{"support_page": "https://example.org/help", "contacts": []any{
			map[string]any{"matrix_id": "@admin:example.org", "email_address": "admin@example.org", "role": "m.role.admin"},
			map[string]any{"email_address": "security@example.org", "role": "m.role.security"},
		}}
		if status != 200 || !reflect.DeepEqual(body, want) {
			t.Errorf("configured: %d %v, want 200 %v", status, body, want)
		}
	})
	t.Run("page only", func(t *testing.T) {
		srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
			c.Support.SupportPage = "https://example.org/help"
		}})
		status, body := getWellKnownSupport(t, srv)
		if _, has := body["contacts"]; status != 200 || has || body["support_page"] != "https://example.org/help" {
			t.Errorf("page only: %d %v, want 200 with support_page and no contacts", status, body)
		}
	})
}
