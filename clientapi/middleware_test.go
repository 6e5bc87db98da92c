package clientapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/metrics"
	"github.com/myelin-chat/myelin/internal/recovery"
)

// TestMiddlewareRecoversHandlerPanics: a handler that panics answers a
// generic 500 M_UNKNOWN (no internals), the server goes on, and the panic is
// counted with the others.
func TestMiddlewareRecoversHandlerPanics(t *testing.T) {
	counter := metrics.PanicsRecovered.WithLabelValues(recovery.HTTPHandler)
	before := testutil.ToFloat64(counter)
	h := Middleware(config.Default())(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("secret internal detail")
	}))
	for i := 0; i < 2; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/_matrix/client/v3/whatever", nil))
		if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "M_UNKNOWN") ||
			strings.Contains(rec.Body.String(), "secret") {
			t.Fatalf("answer %d %s", rec.Code, rec.Body.String())
		}
	}
	if got := testutil.ToFloat64(counter) - before; got != 2 {
		t.Fatalf("counted %v panics, want 2", got)
	}
}
