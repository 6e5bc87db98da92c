package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
)

// runCLI runs the binary and returns its stdout and exit status.
func runCLI(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cmd.Environ(), "MYELIN_PASSWORD=correct horse")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr.String())
	}
	return string(out), 0
}

// TestAuditCLI: register-user and registration-token create are recorded in
// the audit trail; `audit export` writes them as JSON lines, by time;
// `audit verify` passes, then names the record a SQL UPDATE altered and
// exits non-zero.
func TestAuditCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dataDir := t.TempDir()
	before := time.Now().Add(-time.Second).UTC().Format(time.RFC3339)
	if out, code := runCLI(t, bin, "register-user", "--data-dir", dataDir, "--user", "root", "--admin"); code != 0 {
		t.Fatalf("register-user exited %d: %s", code, out)
	}
	if out, code := runCLI(t, bin, "registration-token", "create", "--data-dir", dataDir, "--uses", "3"); code != 0 {
		t.Fatalf("registration-token exited %d: %s", code, out)
	}
	out, code := runCLI(t, bin, "audit", "verify", "--data-dir", dataDir)
	if code != 0 || !strings.HasPrefix(out, "OK 2 records") {
		t.Fatalf("audit verify: exit %d, %q", code, out)
	}

	out, code = runCLI(t, bin, "audit", "export", "--data-dir", dataDir, "--since", before)
	if code != 0 {
		t.Fatalf("audit export exited %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("export wrote %d lines:\n%s", len(lines), out)
	}
	var first, second struct {
		Seq   int64  `json:"seq"`
		Kind  string `json:"kind"`
		Actor string `json:"actor"`
		Hash  string `json:"hash"`
		Prev  string `json:"prev"`
		Body  struct {
			Action  string         `json:"action"`
			Via     string         `json:"via"`
			Details map[string]any `json:"details"`
		} `json:"body"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first.Seq != 1 || first.Kind != "admin_action" || first.Actor != "cli" || first.Body.Action != "register_user" ||
		first.Body.Details["user_id"] != "@root:localhost" || first.Body.Details["admin"] != true {
		t.Fatalf("first record %s", lines[0])
	}
	if second.Seq != 2 || second.Body.Action != "registration_token.create" || second.Prev != first.Hash {
		t.Fatalf("second record %s", lines[1])
	}
	// A window before everything is empty; bad times are refused.
	if out, code := runCLI(t, bin, "audit", "export", "--data-dir", dataDir, "--until", before); code != 0 || out != "" {
		t.Fatalf("export before the records: exit %d, %q", code, out)
	}
	if _, code := runCLI(t, bin, "audit", "export", "--data-dir", dataDir, "--since", "yesterday"); code == 0 {
		t.Fatal("export accepted --since yesterday")
	}

	// One stored byte changed: verify names record 1 and fails.
	db, err := storage.Open(context.Background(), "sqlite:"+filepath.Join(dataDir, "myelin.db"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(context.Background(), `UPDATE audit_log SET body = REPLACE(body, '"admin":true', '"admin":null') WHERE seq = 1`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out, code = runCLI(t, bin, "audit", "verify", "--data-dir", dataDir)
	if code == 0 || !strings.HasPrefix(out, "BAD record 1:") {
		t.Fatalf("audit verify after tampering: exit %d, %q", code, out)
	}
}
