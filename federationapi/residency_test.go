package federationapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/keyserver"
	"github.com/myelin-chat/myelin/residency"
)

type denyAll struct{}

func (denyAll) Server(_ context.Context, s string, k residency.Kind) residency.Decision {
	return residency.Decision{Rule: residency.RuleShare("b", k), Reason: "no " + string(k) + " for " + s}
}
func (denyAll) Room(_ context.Context, room, s string, k residency.Kind) residency.Decision {
	return residency.Decision{Rule: "residency.zones.a.includes", Reason: "room " + room + " is resident in zone a"}
}
func (d denyAll) Join(ctx context.Context, room, s string) residency.Decision {
	return d.Room(ctx, room, s, residency.Events)
}
func (d denyAll) Invited(ctx context.Context, room, s string, _ []json.RawMessage) residency.Decision {
	return d.Room(ctx, room, s, residency.Events)
}

type trail struct {
	refusals []audit.Refusal
	flows    []audit.Flow
}

func (t *trail) Refusal(_ string, r audit.Refusal) { t.refusals = append(t.refusals, r) }
func (t *trail) Flow(_ string, f audit.Flow)       { t.flows = append(t.flows, f) }

// TestResidencyRefusalAnswer: a refused key query is 403 M_FORBIDDEN with
// the policy's reason, before the keyserver is asked, recorded once with
// the endpoint named from its route.
func TestResidencyRefusalAnswer(t *testing.T) {
	tr := &trail{}
	a := New(Options{ServerName: "a1.test", UserKeys: nilKeys{}, Residency: denyAll{}, Audit: tr})
	r := chi.NewRouter()
	r.Route("/_matrix/federation", a.Mount)
	for _, c := range []struct{ method, path, body, endpoint, reason string }{
		{"POST", "/_matrix/federation/v1/user/keys/query", `{"device_keys":{"@u:a1.test":[]}}`, "user/keys/query", "no keys for b.test"},
		{"GET", "/_matrix/federation/v1/user/devices/@u:a1.test", "", "user/devices", "no device_keys for b.test"},
	} {
		req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		req = req.WithContext(federation.WithOrigin(req.Context(), "b.test"))
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		var body struct{ Errcode, Error string }
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != http.StatusForbidden || body.Errcode != "M_FORBIDDEN" || body.Error != c.reason {
			t.Errorf("%s: %d %s, want 403 M_FORBIDDEN %q", c.path, w.Code, w.Body, c.reason)
		}
		last := tr.refusals[len(tr.refusals)-1]
		if last.Purpose != c.endpoint || last.Direction != audit.Inbound || last.Server != "b.test" || last.Reason != c.reason {
			t.Errorf("%s: refusal record %+v", c.path, last)
		}
	}
	if len(tr.refusals) != 2 || len(tr.flows) != 0 {
		t.Errorf("records: %d refusals, %d flows; want 2, 0", len(tr.refusals), len(tr.flows))
	}
}

// nilKeys fails the test's requests if ever asked: the policy answers first.
type nilKeys struct{}

func (nilKeys) LocalUserDevices(context.Context, string) (*keyserver.UserDevicesResponse, error) {
	panic("asked the keyserver for a refused server")
}
func (nilKeys) FederationQuery(context.Context, map[string][]string) (*keyserver.QueryResponse, error) {
	panic("asked the keyserver for a refused server")
}
func (nilKeys) FederationClaim(context.Context, map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	panic("asked the keyserver for a refused server")
}
