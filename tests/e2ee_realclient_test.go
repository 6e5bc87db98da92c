package tests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestE2EEWithMatrixJSSDK runs tests/js/e2ee.mjs: two matrix-js-sdk 43 clients
// with the Rust crypto stack encrypt, decrypt, cross-sign, verify by SAS and
// restore a key backup through a real Myelin. It fails if any decryption fails.
// Node 22 comes from the pinned npm package node@22 (tests/js/package-lock.json).
func TestE2EEWithMatrixJSSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("real-client E2EE test skipped in -short mode")
	}
	jsDir, node := jsNode(t)
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			runJSScenario(t, jsDir, node, "e2ee.mjs", testserver.Start(t, backend).URL, "[e2ee] PASS")
		})
	}
}

// jsNode installs tests/js's pinned dependencies and returns that directory
// and the Node 22 binary from node_modules (matrix-js-sdk 43 needs Node 22).
func jsNode(t *testing.T) (jsDir, node string) {
	t.Helper()
	jsDir, err := filepath.Abs("js")
	if err != nil {
		t.Fatal(err)
	}
	npmCI(t, jsDir)
	node = filepath.Join(jsDir, "node_modules", ".bin", "node")
	if out, err := exec.Command(node, "--version").Output(); err != nil || !strings.HasPrefix(string(out), "v22.") {
		t.Fatalf("node from node_modules: %q, %v (matrix-js-sdk 43 needs Node 22)", out, err)
	}
	return jsDir, node
}

// TestE2EEFederationWithMatrixJSSDK runs tests/js/e2ee_federation.mjs: a
// matrix-js-sdk 43 client with Rust crypto on each of two Myelin servers
// federating over loopback; encrypted messages both ways, SAS verification
// between the two users, a key backup restored on a new device.
func TestE2EEFederationWithMatrixJSSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("real-client E2EE test skipped in -short mode")
	}
	jsDir, node := jsNode(t)
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a, b := n.start(t, backend, "a.test"), n.start(t, backend, "b.test")
			runJSScenarioEnv(t, jsDir, node, "e2ee_federation.mjs", "[e2ee-federation] PASS",
				"MYELIN_URL_A="+a.URL, "MYELIN_URL_B="+b.URL)
		})
	}
}

// runJSScenario runs one scenario script against the server at url and
// fails the test unless it exits 0 having printed pass.
func runJSScenario(t *testing.T, jsDir, node, script, url, pass string) {
	t.Helper()
	runJSScenarioEnv(t, jsDir, node, script, pass, "MYELIN_URL="+url)
}

// runJSScenarioEnv runs one scenario script with env added to the
// environment and fails the test unless it exits 0 having printed pass.
func runJSScenarioEnv(t *testing.T, jsDir, node, script, pass string, env ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("%s output:\n%s", script, out.String())
	if err != nil || !strings.Contains(out.String(), pass) {
		t.Fatalf("real-client scenario %s failed: %v", script, err)
	}
}

// npmCI installs the pinned JS dependencies once (npm ci is skipped when
// node_modules already matches package-lock.json).
func npmCI(t *testing.T, dir string) {
	t.Helper()
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if marker, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil && !marker.ModTime().Before(lock.ModTime()) {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is required for the real-client E2EE test: %v", err)
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
}
