package keyserver

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/myelin-chat/myelin/internal/metrics"
	"github.com/myelin-chat/myelin/internal/recovery"
)

// panickingFederation panics when asked, as a bug in the federation client
// would.
type panickingFederation struct{ Federation }

func (panickingFederation) QueryKeys(context.Context, string, map[string][]string) (*QueryResponse, error) {
	panic("test panic in the federation client")
}

// TestRemoteQueryPanicIsAFailure: a panic while asking a server, on the
// fan-out goroutine the HTTP recovery does not cover, is reported as that
// server's failure instead of ending the process.
func TestRemoteQueryPanicIsAFailure(t *testing.T) {
	s := New(Options{ServerName: "local.example", Federation: panickingFederation{}})
	counter := metrics.PanicsRecovered.WithLabelValues(recovery.RemoteQuery)
	before := testutil.ToFloat64(counter)
	resp, err := s.Query(context.Background(), "@me:local.example", &QueryRequest{Timeout: 5000,
		DeviceKeys: map[string][]string{"@a:remote.example": nil}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.Failures["remote.example"]; !ok {
		t.Fatalf("no failure reported: %v", resp.Failures)
	}
	if d := testutil.ToFloat64(counter) - before; d != 1 {
		t.Fatalf("recovered %v panics, want 1", d)
	}
}
