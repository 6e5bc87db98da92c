package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinary compiles the myelin command once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "myelin")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer runs `myelin run` in zero-config mode and waits for /versions.
func startServer(t *testing.T, bin, dataDir, addr string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, "run", "--data-dir", dataDir, "--http", addr)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	for i := 0; i < 100; i++ {
		if resp, err := http.Get("http://" + addr + "/_matrix/client/versions"); err == nil {
			resp.Body.Close()
			return cmd, &logs
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("server did not start:\n%s", logs.String())
	return nil, nil
}

func post(t *testing.T, url, token string, body any) map[string]any {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(raw))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST %s = %d %s", url, resp.StatusCode, data)
	}
	return out
}

// TestZeroConfigRunShutdownRestart is the README's promise end to end: the
// binary starts with no configuration, a client registers and is answered,
// SIGTERM lets an in-flight long-poll finish at once and exits cleanly, and a
// restart on the same data dir keeps the account and the signing key.
func TestZeroConfigRunShutdownRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dataDir, addr := t.TempDir(), freeAddr(t)
	base := "http://" + addr
	cmd, logs := startServer(t, bin, dataDir, addr)
	if !strings.Contains(logs.String(), "registration is OPEN") {
		t.Errorf("zero-config mode must log that registration is open; logs:\n%s", logs.String())
	}
	reg := post(t, base+"/_matrix/client/v3/register", "", map[string]any{
		"username": "alice", "password": "correct horse", "auth": map[string]string{"type": "m.login.dummy"}})
	token := reg["access_token"].(string)
	key1, err := os.ReadFile(filepath.Join(dataDir, "signing.key"))
	if err != nil {
		t.Fatalf("signing key not kept in the data dir: %v", err)
	}

	// An initial sync, then a long-poll that would wait 60 s.
	req, _ := http.NewRequest("GET", base+"/_matrix/client/v3/sync?timeout=0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var initial map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&initial)
	resp.Body.Close()
	pollDone := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/_matrix/client/v3/sync?timeout=60000&since=%s", base, initial["next_batch"]), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			pollDone <- -1
			return
		}
		resp.Body.Close()
		pollDone <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond) // let the long-poll start waiting

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case status := <-pollDone:
		if status != 200 {
			t.Errorf("in-flight long-poll ended with %d during shutdown, want 200", status)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("shutdown waited for the long-poll's timeout instead of answering it")
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}

	// Restart on the same data: the account and the signing key survived.
	startServer(t, bin, dataDir, addr)
	post(t, base+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "correct horse"})
	key2, _ := os.ReadFile(filepath.Join(dataDir, "signing.key"))
	if !bytes.Equal(key1, key2) {
		t.Error("the signing key changed across a restart")
	}
}
