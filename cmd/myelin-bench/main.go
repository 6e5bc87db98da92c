// Command myelin-bench is Myelin's load tool for the sync path. It starts a
// server (or uses a running one), registers clients in two-person rooms, keeps
// every client in a /sync long-poll, and measures:
//
//   - the server's RSS with all clients idle in /sync (per client);
//   - send throughput at an offered message rate;
//   - delivery latency: from the start of a send to the moment the other
//     member's waiting /sync returns it (p50/p95/p99), and messages lost.
//
// Usage (see docs/performance.md):
//
//	go build -o /tmp/myelin ./cmd/myelin
//	go run ./cmd/myelin-bench -bin /tmp/myelin -clients 200 -rate 500 -duration 30s
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myelin-chat/myelin/homeserver"
	"github.com/myelin-chat/myelin/internal/config"
)

func main() {
	bin := flag.String("bin", "", "myelin binary to start (with a generated config); empty: use -url")
	url := flag.String("url", "", "base URL of a running server (with -pid for RSS)")
	pid := flag.Int("pid", 0, "PID of the running server, to read its RSS")
	dbURL := flag.String("database", "", "database.url for the started server (default: SQLite in a temp dir)")
	clients := flag.Int("clients", 200, "syncing clients (in rooms of two)")
	rate := flag.Float64("rate", 500, "offered messages per second, over all rooms")
	duration := flag.Duration("duration", 30*time.Second, "how long to send")
	idle := flag.Duration("idle", 10*time.Second, "how long clients sit idle in /sync before RSS is read")
	inProcess := flag.Bool("in-process", false, "run the server inside the bench (for -cpuprofile; RSS then includes the clients)")
	cpuProfile := flag.String("cpuprofile", "", "with -in-process: write a CPU profile of the load phase here")
	flag.Parse()
	if *clients < 2 || *clients%2 != 0 {
		log.Fatal("-clients must be an even number >= 2")
	}
	ctx := context.Background()
	b := &bench{http: &http.Client{Transport: &http.Transport{
		MaxIdleConns: 4 * *clients, MaxIdleConnsPerHost: 4 * *clients, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}}
	if *inProcess || *bin != "" {
		stop, err := b.startServer(*bin, *dbURL, *inProcess)
		if err != nil {
			log.Fatal(err)
		}
		defer stop()
	} else {
		if *url == "" {
			log.Fatal("need -bin or -url")
		}
		b.base, b.pid = strings.TrimRight(*url, "/"), *pid
	}
	// Users in rooms of two.
	log.Printf("registering %d clients", *clients)
	users := make([]*user, *clients)
	if err := parallel(*clients, 16, func(i int) error {
		u, err := b.register(ctx, fmt.Sprintf("bench%d_%d", time.Now().Unix()%100000, i))
		users[i] = u
		return err
	}); err != nil {
		log.Fatal(err)
	}
	rooms := make([]string, *clients/2)
	if err := parallel(len(rooms), 16, func(i int) error {
		a, c := users[2*i], users[2*i+1]
		room, err := b.createRoom(ctx, a)
		if err != nil {
			return err
		}
		rooms[i] = room
		a.room, c.room = room, room
		return b.join(ctx, c, room)
	}); err != nil {
		log.Fatal(err)
	}
	// Initial syncs, then everyone long-polls.
	if err := parallel(len(users), 16, func(i int) error {
		next, _, err := b.sync(ctx, users[i], "", 0)
		users[i].since = next
		return err
	}); err != nil {
		log.Fatal(err)
	}
	// Password hashing (argon2id) during registration leaves the heap large
	// until the next GC; a started server is restarted so that the RSS
	// figures show the sync path, not the sign-ups.
	if b.restart != nil {
		if err := b.restart(); err != nil {
			log.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	baseRSS := b.rss()
	rec := newRecorder()
	syncCtx, stopSync := context.WithCancel(ctx)
	var syncers sync.WaitGroup
	for _, u := range users {
		syncers.Add(1)
		go func(u *user) {
			defer syncers.Done()
			b.syncLoop(syncCtx, u, rec)
		}(u)
	}
	log.Printf("%d clients idle in /sync for %s", len(users), *idle)
	time.Sleep(*idle)
	idleRSS := b.rss()

	// Load: send at the offered rate, round-robin over rooms, alternating senders.
	log.Printf("sending %.0f msg/s for %s", *rate, *duration)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
	}
	interval := time.Duration(float64(time.Second) / *rate)
	var sent, failed atomic.Int64
	var sendLat latencies
	var sends sync.WaitGroup
	start := time.Now()
	ticker := time.NewTicker(interval)
	n := 0
	for time.Since(start) < *duration {
		<-ticker.C
		i := n % len(rooms)
		from := users[2*i+(n/len(rooms))%2]
		to := users[2*i+1-(n/len(rooms))%2]
		n++
		sends.Add(1)
		go func(seq int) {
			defer sends.Done()
			nonce := strconv.Itoa(seq)
			t0 := time.Now()
			rec.expect(to.id, nonce, t0)
			if err := b.send(ctx, from, nonce); err != nil {
				failed.Add(1)
				rec.cancel(to.id, nonce)
				return
			}
			sendLat.add(time.Since(t0))
			sent.Add(1)
		}(n)
	}
	ticker.Stop()
	sends.Wait()
	elapsed := time.Since(start)
	// Let the last deliveries arrive.
	deadline := time.Now().Add(10 * time.Second)
	for rec.pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	loadRSS := b.rss()
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	stopSync()
	syncers.Wait()

	d := rec.delivered.sorted()
	s := sendLat.sorted()
	fmt.Printf("clients:            %d (%d rooms of two)\n", len(users), len(rooms))
	fmt.Printf("offered:            %.0f msg/s for %s (%d messages)\n", *rate, *duration, n)
	fmt.Printf("sent:               %d ok, %d failed; throughput %.1f msg/s\n", sent.Load(), failed.Load(), float64(sent.Load())/elapsed.Seconds())
	fmt.Printf("send latency:       p50 %s  p95 %s  p99 %s\n", pct(s, 50), pct(s, 95), pct(s, 99))
	fmt.Printf("delivery latency:   p50 %s  p95 %s  p99 %s  max %s (%d delivered)\n", pct(d, 50), pct(d, 95), pct(d, 99), pct(d, 100), len(d))
	fmt.Printf("lost:               %d; duplicates: %d\n", rec.pending(), rec.dups.Load())
	if baseRSS > 0 {
		fmt.Printf("server RSS:         %.1f MiB after a restart, %.1f MiB with %d idle syncing clients (%.1f KiB per client), %.1f MiB after load\n",
			mib(baseRSS), mib(idleRSS), len(users), float64(idleRSS-baseRSS)/1024/float64(len(users)), mib(loadRSS))
	}
}

type bench struct {
	http    *http.Client
	base    string
	pid     int
	restart func() error // restarts a server the bench started
}

type user struct {
	id, token, room, since string
}

// startServer starts a server with a config tuned for load (open
// registration, rate limits out of the way) on a free loopback port: in this
// process, or by running the myelin binary bin. The returned func stops it
// and removes its data.
func (b *bench) startServer(bin, dbURL string, inProcess bool) (_ func(), err error) {
	dir, err := os.MkdirTemp("", "myelin-bench")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	b.base = "http://" + addr
	cfg := fmt.Sprintf(`server_name: localhost
data_dir: %s
listen:
  http: %s
database:
  url: %q
registration:
  mode: open
limits:
  requests_per_second: 1000000
  burst: 1000000
  login_per_second: 1000000
  login_burst: 1000000
logging:
  level: warn
`, dir, addr, dbURL)
	path := filepath.Join(dir, "myelin.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	var stop func()
	if inProcess {
		stop, err = b.serveInProcess(path, ln)
	} else {
		ln.Close() // the binary listens on addr itself
		stop, err = b.runBinary(bin, path)
	}
	if err != nil {
		return nil, err
	}
	return func() {
		stop()
		os.RemoveAll(dir)
	}, nil
}

// serveInProcess serves the config at path on ln in this process.
func (b *bench) serveInProcess(path string, ln net.Listener) (func(), error) {
	cfg, err := config.Load(path)
	if err != nil {
		ln.Close()
		return nil, err
	}
	srv, err := homeserver.New(context.Background(), cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	go func() { _ = srv.Serve(ln) }()
	b.pid = os.Getpid()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// runBinary runs `bin run -config path` and waits for it to answer; b.restart
// restarts it (for an RSS figure without the garbage of the setup phase).
func (b *bench) runBinary(bin, path string) (func(), error) {
	var cmd *exec.Cmd
	start := func() error {
		cmd = exec.Command(bin, "run", "-config", path)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		b.pid = cmd.Process.Pid
		for i := 0; ; i++ {
			resp, err := b.http.Get(b.base + "/health")
			if err == nil {
				resp.Body.Close()
				return nil
			}
			if i > 100 {
				_ = cmd.Process.Kill()
				return fmt.Errorf("server did not come up: %w", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
	if err := start(); err != nil {
		return nil, err
	}
	b.restart = func() error {
		stop()
		b.http.CloseIdleConnections()
		return start()
	}
	return stop, nil
}

// rss reads the server's resident set size in bytes (0 when unknown).
func (b *bench) rss() int64 {
	if b.pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func (b *bench) do(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, rd)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (b *bench) register(ctx context.Context, name string) (*user, error) {
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	err := b.do(ctx, "POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": name, "password": "bench-password-" + name, "auth": map[string]any{"type": "m.login.dummy"},
	}, &resp)
	return &user{id: resp.UserID, token: resp.AccessToken}, err
}

func (b *bench) createRoom(ctx context.Context, u *user) (string, error) {
	var resp struct {
		RoomID string `json:"room_id"`
	}
	err := b.do(ctx, "POST", "/_matrix/client/v3/createRoom", u.token, map[string]any{"preset": "public_chat"}, &resp)
	return resp.RoomID, err
}

func (b *bench) join(ctx context.Context, u *user, room string) error {
	return b.do(ctx, "POST", "/_matrix/client/v3/join/"+room, u.token, map[string]any{}, nil)
}

var txn atomic.Int64

func (b *bench) send(ctx context.Context, u *user, nonce string) error {
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/b%d", u.room, txn.Add(1))
	return b.do(ctx, "PUT", path, u.token, map[string]any{"msgtype": "m.text", "body": nonce}, nil)
}

// syncResp is the part of a /sync response the bench reads.
type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Sender  string `json:"sender"`
					Type    string `json:"type"`
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

const benchFilter = `{"room":{"timeline":{"limit":50},"state":{"lazy_load_members":true}},"presence":{"not_types":["*"]}}`

func (b *bench) sync(ctx context.Context, u *user, since string, timeoutMS int) (string, *syncResp, error) {
	q := "?timeout=" + strconv.Itoa(timeoutMS) + "&set_presence=offline&filter=" + urlEscape(benchFilter)
	if since != "" {
		q += "&since=" + since
	}
	var resp syncResp
	err := b.do(ctx, "GET", "/_matrix/client/v3/sync"+q, u.token, nil, &resp)
	return resp.NextBatch, &resp, err
}

func (b *bench) syncLoop(ctx context.Context, u *user, rec *recorder) {
	for ctx.Err() == nil {
		next, resp, err := b.sync(ctx, u, u.since, 30000)
		if err != nil {
			if ctx.Err() == nil {
				log.Printf("sync %s: %v", u.id, err)
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		now := time.Now()
		for _, room := range resp.Rooms.Join {
			for _, e := range room.Timeline.Events {
				if e.Type == "m.room.message" && e.Sender != u.id {
					rec.got(u.id, e.Content.Body, now)
				}
			}
		}
		u.since = next
	}
}

// recorder matches sends with deliveries.
type recorder struct {
	mu        sync.Mutex
	want      map[string]time.Time // receiver + nonce → send start
	delivered latencies
	dups      atomic.Int64
}

func newRecorder() *recorder { return &recorder{want: map[string]time.Time{}} }

func (r *recorder) expect(to, nonce string, t time.Time) {
	r.mu.Lock()
	r.want[to+"|"+nonce] = t
	r.mu.Unlock()
}

func (r *recorder) cancel(to, nonce string) {
	r.mu.Lock()
	delete(r.want, to+"|"+nonce)
	r.mu.Unlock()
}

func (r *recorder) got(to, nonce string, at time.Time) {
	r.mu.Lock()
	t0, ok := r.want[to+"|"+nonce]
	delete(r.want, to+"|"+nonce)
	r.mu.Unlock()
	if !ok {
		r.dups.Add(1) // (or a message from before the load phase)
		return
	}
	r.delivered.add(at.Sub(t0))
}

func (r *recorder) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.want)
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]time.Duration(nil), l.d...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i].Round(100 * time.Microsecond)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func parallel(n, workers int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	idx := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		idx <- i
	}
	close(idx)
	wg.Wait()
	return errors.Join(errs...)
}

func urlEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
