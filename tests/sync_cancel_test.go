package tests

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestSyncCancelledByClient: a long-poll /sync the client gives up is no
// server error: the access log records it as 499 (nginx's "client closed
// request") at its usual level, nothing is logged at ERROR, and
// myelin_http_requests_total counts it under 499, never 5xx.
func TestSyncCancelledByClient(t *testing.T) {
	for _, backend := range testserver.Backends { // not in parallel: the default logger is replaced
		t.Run(backend, func(t *testing.T) { syncCancelledByClient(t, backend) })
	}
}

func syncCancelledByClient(t *testing.T, backend string) {
	var buf syncBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	srv := testserver.Start(t, backend, testserver.Options{Configure: func(c *config.Config) { c.Logging.AccessLog = "info" }})
	alice := srv.Register(t, "alice")
	since := must(alice.SyncRequest(ctxT(t), 0, "", "", false, "")).NextBatch

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/_matrix/client/v3/sync?timeout=30000&since="+since, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
	time.AfterFunc(300*time.Millisecond, cancel)
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("long-poll: %v, want cancelled", err)
	}

	const route = "/_matrix/client/v3/sync"
	syncLines := func() (out []map[string]any) {
		for _, l := range buf.records() {
			if l["msg"] == "request" && l["route"] == route {
				out = append(out, l)
			}
		}
		return out
	}
	var logged map[string]any
	for deadline := time.Now().Add(10 * time.Second); logged == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for the cancelled /sync:\n%s", buf.buf.String())
		}
		if l := syncLines(); len(l) == 2 { // the first sync, then the long-poll
			logged = l[1]
		}
	}
	if logged["status"] != float64(499) || logged["level"] != "INFO" {
		t.Fatalf("access log line of the cancelled /sync: %v", logged)
	}
	for _, l := range buf.records() {
		if l["level"] == "ERROR" {
			t.Errorf("logged at ERROR: %v", l)
		}
	}
	families, err := srv.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "myelin_http_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["route"] == route {
				counted[labels["status"]] += m.GetCounter().GetValue()
			}
		}
	}
	for status := range counted {
		if strings.HasPrefix(status, "5") {
			t.Errorf("/sync counted as %s: %v", status, counted)
		}
	}
	if counted["499"] != 1 || counted["200"] != 1 {
		t.Errorf("/sync counts %v, want one 200 and one 499", counted)
	}
}

// records are the JSON log records written so far.
func (b *syncBuffer) records() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(b.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}
