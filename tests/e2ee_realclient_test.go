package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testserver"
)

var npmOnce sync.Once
var npmErr error

// TestE2EEWithMatrixJSSDK runs tests/js/scenario.mjs: two matrix-js-sdk
// clients with Rust crypto (pinned in tests/js/package-lock.json, run on the
// Node 22 the npm package "node" installs) against a real server.
func TestE2EEWithMatrixJSSDK(t *testing.T) {
	dir, err := filepath.Abs("js")
	if err != nil {
		t.Fatal(err)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is required for the real-client E2EE test: %v", err)
	}
	npmOnce.Do(func() {
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			npmErr = err
			t.Logf("npm ci:\n%s", out)
		}
	})
	if npmErr != nil {
		t.Fatalf("npm ci failed: %v", npmErr)
	}
	node := filepath.Join(dir, "node_modules", ".bin", "node")
	if out, err := exec.Command(node, "--version").Output(); err != nil || !strings.HasPrefix(string(out), "v22.") {
		t.Fatalf("node from node_modules: %q, %v", out, err)
	}
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			srv := testserver.Start(t, backend)
			// The scenario needs /sync and rooms, which are other issues' work.
			// Skipped loudly (never passed) until the server serves them.
			probe := srv.Register(t, "probe")
			if status, out := keysCall(t, probe, "GET", "/_matrix/client/v3/sync?timeout=0", nil); status == 404 && out["errcode"] == "M_UNRECOGNIZED" {
				t.Skip("SKIPPED: the real-client E2EE scenario needs /sync, which this server does not serve yet")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "scenario.mjs", srv.URL)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "NODE_OPTIONS=--no-warnings")
			out, err := cmd.CombinedOutput()
			t.Logf("scenario output:\n%s", out)
			if err != nil || !strings.Contains(string(out), "PASS") {
				t.Fatalf("real-client scenario failed: %v", err)
			}
		})
	}
}
