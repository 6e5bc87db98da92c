// Package pgtest starts a throwaway PostgreSQL cluster for tests.
package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Backends lists the store backends every storage-touching test runs against.
var Backends = []string{"sqlite", "postgres"}

// Main is a TestMain body: it runs the tests, then stops the shared cluster.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// A throwaway PostgreSQL cluster shared by all tests of one test binary,
// started on first use (initdb + pg_ctl on a free port in a temp dir) unless
// MYELIN_TEST_POSTGRES_URL points at a server. Each test server gets its own
// fresh database in it.
var (
	pgOnce    sync.Once
	pgBaseURL string // URL of the maintenance database
	pgErr     error
	pgStop    func()
	pgDBSeq   atomic.Int64
)

// URL creates a fresh, empty database and returns its URL.
func URL(ctx context.Context) (string, error) {
	pgOnce.Do(func() {
		if u := os.Getenv("MYELIN_TEST_POSTGRES_URL"); u != "" {
			pgBaseURL = u
			return
		}
		pgBaseURL, pgStop, pgErr = startCluster()
	})
	if pgErr != nil {
		return "", pgErr
	}
	conn, err := pgx.Connect(ctx, pgBaseURL)
	if err != nil {
		return "", fmt.Errorf("connecting to test postgres: %w", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("myelin_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, pgDBSeq.Add(1))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("creating test database: %w", err)
	}
	cfg := conn.Config()
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name), nil
}

// Stop stops the throwaway cluster, if one was started. Call it from TestMain.
func Stop() {
	if pgStop != nil {
		pgStop()
	}
}

func pgBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL not found: install the postgresql package or set MYELIN_TEST_POSTGRES_URL")
}

func pgVersion(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

func startCluster() (string, func(), error) {
	bin, err := pgBinDir()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "myelin-pg-")
	if err != nil {
		return "", nil, err
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	// PostgreSQL refuses to run as root: run it as the postgres user then.
	var asUser []string
	dbUser := "postgres"
	if os.Geteuid() == 0 {
		pw, err := user.Lookup("postgres")
		if err != nil {
			return "", nil, fmt.Errorf("running as root needs a postgres system user: %w", err)
		}
		uid, _ := strconv.Atoi(pw.Uid)
		gid, _ := strconv.Atoi(pw.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", nil, err
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	} else if u, err := user.Current(); err == nil {
		dbUser = u.Username
	}
	run := func(args ...string) error {
		full := append(append([]string{}, asUser...), args...)
		cmd := exec.Command(full[0], full[1:]...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w\n%s", filepath.Base(args[0]), err, out.String())
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run(filepath.Join(bin, "initdb"), "-D", data, "-U", dbUser, "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		return "", nil, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300", port, dir)
	if err := run(filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start"); err != nil {
		return "", nil, err
	}
	stop := func() {
		_ = run(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
		os.RemoveAll(dir)
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", dbUser, port), stop, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// StoreURL names a fresh, empty store on backend for t: a SQLite file in
// t's temporary directory, or a new database in the throwaway cluster.
func StoreURL(t testing.TB, backend string) string {
	t.Helper()
	if backend != "postgres" {
		return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
	}
	url, err := URL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return url
}
