package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// Interop with Dendrite 0.13.8, a test tool run as a separate process (never
// linked into Myelin): .ci/run installs it with
//
//	CGO_ENABLED=1 go install github.com/matrix-org/dendrite/cmd/{dendrite,generate-config,generate-keys}@v0.13.8
//
// and sets MYELIN_DENDRITE_BIN to the dendrite binary (generate-config and
// generate-keys beside it). Both servers federate over TLS on loopback with
// IP-literal server names (127.0.0.1:port), so no DNS is involved: Dendrite
// skips certificate validation (disable_tls_validation), Myelin trusts
// Dendrite's self-signed certificate (federation.trusted_ca_file) and dials
// loopback (federation.allowed_private_networks).

const dendriteInstall = "CGO_ENABLED=1 go install github.com/matrix-org/dendrite/cmd/dendrite@v0.13.8 " +
	"github.com/matrix-org/dendrite/cmd/generate-config@v0.13.8 github.com/matrix-org/dendrite/cmd/generate-keys@v0.13.8"

// dendriteBinary finds the dendrite binary: $MYELIN_DENDRITE_BIN, then PATH,
// then $GOBIN / $GOPATH/bin / ~/go/bin. In CI a missing binary is a failure,
// elsewhere the test is skipped.
func dendriteBinary(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("MYELIN_DENDRITE_BIN")}
	if p, err := exec.LookPath("dendrite"); err == nil {
		candidates = append(candidates, p)
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(os.Getenv("GOPATH"), "bin")} {
		if dir != "" && dir != "bin" {
			candidates = append(candidates, filepath.Join(dir, "dendrite"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, "go", "bin", "dendrite"))
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		dir := filepath.Dir(c)
		if isFile(c) && isFile(filepath.Join(dir, "generate-config")) && isFile(filepath.Join(dir, "generate-keys")) {
			return c
		}
	}
	msg := "Dendrite 0.13.8 is not installed (dendrite, generate-config and generate-keys in one directory): " +
		dendriteInstall + ", or set MYELIN_DENDRITE_BIN"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// loopbackPort returns a free loopback port (closed again: the server that
// gets it binds it a moment later).
func loopbackPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dendriteServer is a running Dendrite.
type dendriteServer struct {
	ServerName string // 127.0.0.1:<https port>
	URL        string // client API, plain HTTP
	CertFile   string // its self-signed TLS certificate
	logFile    string
}

// startDendrite runs Dendrite 0.13.8 on loopback with SQLite, open
// registration, an in-memory NATS and federation over HTTPS; it is stopped
// when the test ends, and its log is printed if the test failed.
func startDendrite(t *testing.T) *dendriteServer {
	t.Helper()
	bin := dendriteBinary(t)
	// Its ports are picked free and released before Dendrite binds them:
	// another process may take one in between, so try again on others.
	for attempt := 1; ; attempt++ {
		d, err := tryStartDendrite(t, bin)
		if err == nil {
			return d
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%v; trying other ports", err)
	}
}

func tryStartDendrite(t *testing.T, bin string) (*dendriteServer, error) {
	t.Helper()
	binDir := filepath.Dir(bin)
	dir := t.TempDir()
	fedPort, httpPort := loopbackPort(t), loopbackPort(t)
	d := &dendriteServer{
		ServerName: "127.0.0.1:" + strconv.Itoa(fedPort),
		URL:        "http://127.0.0.1:" + strconv.Itoa(httpPort),
		CertFile:   filepath.Join(dir, "server.crt"),
		logFile:    filepath.Join(dir, "dendrite.log"),
	}
	keyFile := filepath.Join(dir, "server.key")
	writeCert(t, d.CertFile, keyFile, "dendrite")

	run := func(name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, name), args...)
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
		}
		return out
	}
	run("generate-keys", "--private-key", filepath.Join(dir, "matrix_key.pem"))
	// generate-config -ci: SQLite files in dir, in-memory NATS, open
	// registration, no rate limits, no key perspectives (no matrix.org).
	raw := run("generate-config", "-ci", "-server", d.ServerName, "-dir", dir)
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("generate-config output: %v", err)
	}
	section := func(name string) map[string]any {
		s, ok := cfg[name].(map[string]any)
		if !ok {
			t.Fatalf("generate-config output has no %s section", name)
		}
		return s
	}
	section("global")["private_key"] = filepath.Join(dir, "matrix_key.pem")
	// Myelin's certificate is self-signed.
	section("federation_api")["disable_tls_validation"] = true
	section("mscs")["mscs"] = []string{}
	level := os.Getenv("MYELIN_DENDRITE_LOG_LEVEL") // e.g. debug, trace
	if level == "" {
		level = "info"
	}
	cfg["logging"] = []map[string]any{{"type": "std", "level": level}}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "dendrite.yaml")
	if err := os.WriteFile(cfgFile, out, 0o600); err != nil {
		t.Fatal(err)
	}

	logOut, err := os.Create(d.logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgFile, "--really-enable-open-registration",
		"--http-bind-address", "127.0.0.1:"+strconv.Itoa(httpPort),
		"--https-bind-address", d.ServerName, "--tls-cert", d.CertFile, "--tls-key", keyFile)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logOut, logOut
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting dendrite: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logOut.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			d.dumpLog(t)
		}
	})

	// Ready when both listeners answer.
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok := func(url string) bool {
			resp, err := insecure.Get(url)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}
		if ok(d.URL+"/_matrix/client/versions") && ok("https://"+d.ServerName+"/_matrix/key/v2/server") {
			return d, nil
		}
		select {
		case <-exited:
			d.dumpLog(t)
			return nil, fmt.Errorf("dendrite exited while starting")
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dendrite did not start within 90s")
		}
	}
}

// dumpLog prints the end of Dendrite's log.
func (d *dendriteServer) dumpLog(t *testing.T) {
	b, err := os.ReadFile(d.logFile)
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > 400 {
		lines = lines[len(lines)-400:]
	}
	t.Logf("dendrite log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
}

// Register creates a Dendrite user and returns a logged-in mautrix client.
func (d *dendriteServer) Register(t testing.TB, localpart string) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(d.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Client = &http.Client{Timeout: 60 * time.Second}
	resp, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: "password-" + localpart,
	})
	if err != nil {
		t.Fatalf("registering %s on dendrite: %v", localpart, err)
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c
}

// startMyelinForDendrite starts a Myelin server on backend whose server name
// is its TLS listener's address (127.0.0.1:port), federating with d.
func startMyelinForDendrite(t *testing.T, backend string, d *dendriteServer) *testserver.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, "myelin")
	srv := testserver.Start(t, backend, testserver.Options{ServerName: ln.Addr().String(), Configure: func(c *config.Config) {
		c.Listen.Federation = "127.0.0.1:0" // served on ln below
		c.Listen.TLSCertificate, c.Listen.TLSKey = certFile, keyFile
		c.Federation.AllowedPrivateNetworks = []string{"127.0.0.0/8"}
		c.Federation.TrustedCAFile = d.CertFile
		c.Federation.RequestsPerSecond, c.Federation.Burst = 10000, 100000
		c.Federation.NotaryRequestsPerSecond, c.Federation.NotaryBurst = 10000, 100000
		c.Federation.KeyFetchesPerSecond, c.Federation.KeyFetchBurst = 10000, 100000
	}})
	go func() { _ = srv.ServeTLS(ln) }()
	return srv
}
