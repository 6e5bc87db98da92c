package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

const auditPath = "/_myelin/admin/v1/audit"

// auditAdmin creates a server admin on srv and logs it in.
func auditAdmin(t *testing.T, srv *testserver.Server) *mautrix.Client {
	t.Helper()
	if _, err := srv.Accounts.CreateUser(context.Background(), "auditor", "password-auditor", true); err != nil {
		t.Fatal(err)
	}
	c, err := loginPassword(t, srv, "auditor", "password-auditor", "AUDITDEV")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// auditRecords pages through srv's audit trail with the admin endpoint.
func auditRecords(t *testing.T, admin *mautrix.Client) []audit.Record {
	t.Helper()
	var all []audit.Record
	from := int64(1)
	for {
		r := clientCall(t, admin, http.MethodGet, fmt.Sprintf("%s?from=%d&limit=50", auditPath, from), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET audit: %d %s", r.Status, r.Raw)
		}
		var page struct {
			Records  []audit.Record `json:"records"`
			NextFrom int64          `json:"next_from"`
		}
		if err := json.Unmarshal([]byte(r.Raw), &page); err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Records...)
		if page.NextFrom == 0 {
			return all
		}
		from = page.NextFrom
	}
}

// flows returns the flow records of recs in direction with server.
func flows(t *testing.T, recs []audit.Record, direction, server string) []audit.Flow {
	t.Helper()
	var out []audit.Flow
	for _, r := range recs {
		if r.Kind != audit.KindFlow {
			continue
		}
		var f audit.Flow
		if err := json.Unmarshal(r.Body, &f); err != nil {
			t.Fatalf("flow record %d: %v", r.Seq, err)
		}
		if f.Direction == direction && f.Server == server {
			out = append(out, f)
		}
	}
	return out
}

// waitFlow polls admin's audit trail until a flow in direction with server
// satisfies cond.
func waitFlow(t *testing.T, admin *mautrix.Client, direction, server, what string, cond func(audit.Flow) bool) audit.Flow {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, f := range flows(t, auditRecords(t, admin), direction, server) {
			if cond(f) {
				return f
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s flow with %s recorded for %s", direction, server, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricsText is srv's /metrics (served to loopback clients).
func metricsText(t *testing.T, srv *testserver.Server) string {
	t.Helper()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestFederationAuditFlows: a message and a typing notification from
// a.test to b.test are recorded as outbound flows on a.test (the room and
// its PDUs, the m.typing EDU, bytes) and as inbound flows on b.test, read
// through each server's admin endpoint; both chains verify and the flow
// counters count them.
func TestFederationAuditFlows(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			defer recoverMust(t)
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice, bob := a.Register(t, "alice"), b.Register(t, "bob")
			adminA, adminB := auditAdmin(t, a), auditAdmin(t, b)

			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			must(bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}))
			msg := sendText(t, alice, room, "audited")
			bobSince := syncUntil(t, bob, "", "", func(r *mautrix.RespSync) bool {
				joined := r.Rooms.Join[room]
				return joined != nil && syncHasEvent(joined.Timeline.Events, msg)
			}).NextBatch
			must(alice.UserTyping(ctx, room, true, 30*time.Second))
			syncUntil(t, bob, bobSince, "", typingIs(room, string(alice.UserID)))

			events := func(f audit.Flow) bool {
				return f.Rooms[string(room)] > 0 && f.Data[audit.DataEvents] > 0 && f.PDUs > 0 && f.Bytes > 0 && f.TxnID != ""
			}
			typing := func(f audit.Flow) bool {
				return f.EDUs["m.typing"] > 0 && f.Data[audit.DataTyping] > 0 && f.Bytes > 0
			}
			waitFlow(t, adminA, audit.Outbound, "b.test", "the message", events)
			waitFlow(t, adminA, audit.Outbound, "b.test", "typing", typing)
			waitFlow(t, adminB, audit.Inbound, "a.test", "the message", events)
			waitFlow(t, adminB, audit.Inbound, "a.test", "typing", typing)
			for _, srv := range []*testserver.Server{a, b} {
				v, err := audit.Verify(ctx, srv.DB)
				if err != nil || v.Problem != nil || v.Records == 0 {
					t.Fatalf("%s: verify %+v %v", srv.Config.ServerName, v, err)
				}
			}
			if m := metricsText(t, a); !strings.Contains(m, `myelin_audit_flows_total{direction="outbound",kind="events",zone="disabled"}`) ||
				!strings.Contains(m, `myelin_audit_flows_total{direction="outbound",kind="typing",zone="disabled"}`) ||
				!strings.Contains(m, `myelin_audit_records_total{kind="flow"}`) {
				t.Errorf("a.test's metrics lack the audit counters")
			}
			if m := metricsText(t, b); !strings.Contains(m, `myelin_audit_flows_total{direction="inbound",kind="typing",zone="disabled"}`) {
				t.Errorf("b.test's metrics lack the inbound typing flows")
			}
		})
	}
}

// TestAuditAdminEndpoint: server admins page through the audit trail (the
// server notice they sent is in it); anyone else is refused with 403
// M_FORBIDDEN; bad paging parameters are M_INVALID_PARAM; the limit is bounded.
func TestAuditAdminEndpoint(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		admin := auditAdmin(t, srv)
		user := srv.Register(t, "user")
		if r := clientCall(t, user, http.MethodGet, auditPath, nil); r.Status != http.StatusForbidden || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("non-admin: %d %s", r.Status, r.Raw)
		}
		if r := httpCall(t, srv.URL, http.MethodGet, auditPath, "", nil); r.Status != http.StatusUnauthorized {
			t.Fatalf("no token: %d %s", r.Status, r.Raw)
		}
		// Nothing recorded yet: an empty page.
		if r := clientCall(t, admin, http.MethodGet, auditPath, nil); r.Status != http.StatusOK || !strings.Contains(r.Raw, `"records":[]`) {
			t.Fatalf("empty trail: %d %s", r.Status, r.Raw)
		}
		sendNotice(t, admin, user.UserID, "first", "")
		sendNotice(t, admin, user.UserID, "second", "")
		recs := auditRecords(t, admin)
		if len(recs) != 2 {
			t.Fatalf("%d records, want the 2 notices: %+v", len(recs), recs)
		}
		for i, r := range recs {
			var a audit.AdminAction
			_ = json.Unmarshal(r.Body, &a)
			if r.Seq != int64(i+1) || r.Kind != audit.KindAdminAction || r.Actor != string(admin.UserID) || a.Action != "server_notice" ||
				a.Details["user_id"] != string(user.UserID) || a.Via != "http" {
				t.Fatalf("record %d: %+v %s", i, r, r.Body)
			}
		}
		if recs[1].Prev != recs[0].Hash || recs[1].Hash != recs[1].ComputeHash() {
			t.Fatal("the records served are not chained")
		}
		r := clientCall(t, admin, http.MethodGet, auditPath+"?from=1&limit=1", nil)
		if r.Status != http.StatusOK || r.Body["next_from"] != float64(2) || len(r.Body["records"].([]any)) != 1 {
			t.Fatalf("limit=1: %d %s", r.Status, r.Raw)
		}
		r = clientCall(t, admin, http.MethodGet, auditPath+"?from=2&limit=5000", nil)
		if r.Status != http.StatusOK || r.Body["next_from"] != nil || len(r.Body["records"].([]any)) != 1 {
			t.Fatalf("from=2, limit=5000: %d %s", r.Status, r.Raw)
		}
		for _, q := range []string{"?limit=0", "?limit=-1", "?limit=x", "?from=0", "?from=abc", "?from=99999999999999999999"} {
			if r := clientCall(t, admin, http.MethodGet, auditPath+q, nil); r.Status != http.StatusBadRequest || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %s", q, r.Status, r.Raw)
			}
		}
	})
}

// TestAuditSharedSecretRegistration: a registration through the shared
// secret is recorded (once; refused attempts are not), and the admin it made
// reads it through the endpoint.
func TestAuditSharedSecretRegistration(t *testing.T) {
	const secret = "s3cret-for-audit"
	opts := testserver.Options{Configure: func(c *config.Config) { c.Register.SharedSecret = secret }}
	forEachBackendWith(t, opts, func(t *testing.T, srv *testserver.Server) {
		nonce := func() string {
			n, _ := do(t, srv, "GET", "/_synapse/admin/v1/register", "", nil).Body["nonce"].(string)
			return n
		}
		reg := func(n, mac string) rawResp {
			return doJSON(t, srv, "POST", "/_synapse/admin/v1/register", "", map[string]any{
				"nonce": n, "username": "boss", "password": "pw-boss-123", "admin": true, "mac": mac})
		}
		n := nonce()
		if r := reg(n, accounts.SharedSecretMAC("wrong", n, "boss", "pw-boss-123", true, "")); r.Status != http.StatusForbidden {
			t.Fatalf("wrong MAC: %d %s", r.Status, r.Raw)
		}
		n = nonce()
		r := reg(n, accounts.SharedSecretMAC(secret, n, "boss", "pw-boss-123", true, ""))
		token, _ := r.Body["access_token"].(string)
		if r.Status != http.StatusOK || token == "" {
			t.Fatalf("register: %d %s", r.Status, r.Raw)
		}
		page := do(t, srv, "GET", auditPath, token, nil)
		var got struct {
			Records []audit.Record `json:"records"`
		}
		if err := json.Unmarshal([]byte(page.Raw), &got); err != nil || page.Status != http.StatusOK {
			t.Fatalf("GET audit: %d %s", page.Status, page.Raw)
		}
		if len(got.Records) != 1 {
			t.Fatalf("%d records, want the one registration: %s", len(got.Records), page.Raw)
		}
		var a audit.AdminAction
		_ = json.Unmarshal(got.Records[0].Body, &a)
		if got.Records[0].Actor != "shared_secret" || a.Action != "register_user" || a.Details["user_id"] != srv.UserID("boss").String() ||
			a.Details["admin"] != true {
			t.Fatalf("record %s %s", got.Records[0].Actor, got.Records[0].Body)
		}
	})
}
