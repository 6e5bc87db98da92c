package clientapi

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// AuditTrail is the audit trail (audit.Log): the admin endpoints record
// what they change, and server admins page through it.
type AuditTrail interface {
	AdminAction(ctx context.Context, actor string, a audit.AdminAction) error
	Records(ctx context.Context, from int64, limit int) ([]audit.Record, error)
}

// Paging of GET /_myelin/admin/v1/audit.
const (
	auditDefaultLimit = 100
	auditMaxLimit     = 1000
)

// myelinAdminRoutes are Myelin's own admin endpoints (server admins' access
// tokens).
func (a *API) myelinAdminRoutes(r chi.Router) {
	if a.Audit == nil {
		return
	}
	r.Method(http.MethodGet, "/_myelin/admin/v1/audit", mxhttp.JSON(a.auditPage))
}

// auditPage is GET /_myelin/admin/v1/audit?from=SEQ&limit=N: up to limit
// records (default 100, at most 1000) from sequence number from (default 1)
// on, and next_from when there may be more. Server admins only (403
// M_FORBIDDEN before the query is read).
func (a *API) auditPage(r *http.Request) (any, error) {
	if !authn.FromRequest(r).IsAdmin {
		return nil, mxhttp.Forbidden("You are not a server admin")
	}
	q := r.URL.Query()
	from, limit := int64(1), auditDefaultLimit
	if s := q.Get("from"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return nil, mxhttp.InvalidParam("from must be a sequence number (≥ 1)")
		}
		from = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, mxhttp.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, auditMaxLimit)
	}
	recs, err := a.Audit.Records(r.Context(), from, limit)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"records": recs}
	if recs == nil {
		out["records"] = []audit.Record{}
	}
	if len(recs) == limit {
		out["next_from"] = recs[len(recs)-1].Seq + 1
	}
	return out, nil
}

// auditAdmin records an admin action already done; a failure to record it
// is logged (the action stands: answering an error would say it did not).
func (a *API) auditAdmin(ctx context.Context, actor, action string, details map[string]any) {
	if a.Audit == nil {
		return
	}
	if err := a.Audit.AdminAction(context.WithoutCancel(ctx), actor, audit.AdminAction{Action: action, Via: "http", Details: details}); err != nil {
		slog.Error("audit: an admin action was not recorded", "action", action, "actor", actor, "err", err)
	}
}
