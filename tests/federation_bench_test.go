package tests

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/federationsender"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/roomserver"
)

// Federation benchmarks (docs/performance.md, "Federation"). Setup (servers,
// rooms, members, signing the remote server's events) is outside the timer.

// serveOn serves h on a loopback port for the benchmark's duration and
// returns the address, for a relay to point at.
func serveOn(tb testing.TB, h http.Handler) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// remoteChain builds a remote user's messages as its server would send
// them: each the child of the previous one, signed by the server's key.
type remoteChain struct {
	version id.RoomVersion
	key     *mfed.SigningKey
	room    id.RoomID
	sender  id.UserID
	auth    []id.EventID // create (before v12), power levels, the sender's join
	prev    []id.EventID
	depth   int64
}

// newRemoteChain starts a chain on the room's current forward extremities
// (the sender must be joined already).
func newRemoteChain(tb testing.TB, srv *testserver.Server, key *mfed.SigningKey, room id.RoomID, sender id.UserID) *remoteChain {
	tb.Helper()
	ctx := context.Background()
	row, err := srv.DB.GetRoom(ctx, string(room))
	if err != nil {
		tb.Fatal(err)
	}
	c := &remoteChain{version: id.RoomVersion(row.RoomVersion), key: key, room: room, sender: sender, depth: row.MaxDepth + 1}
	for _, x := range row.Extremities {
		c.prev = append(c.prev, id.EventID(x))
	}
	probe := &pdu.PDU{Type: "m.room.message", Sender: sender, RoomID: room}
	for _, k := range probe.AuthEventSelection(c.version) {
		if ev, err := srv.DB.CurrentStateEvent(ctx, string(room), k.Type, k.StateKey); err == nil {
			c.auth = append(c.auth, id.EventID(ev.EventID))
		}
	}
	return c
}

// next signs n more messages of the chain.
func (c *remoteChain) next(tb testing.TB, n int) (pdus []json.RawMessage, last id.EventID) {
	tb.Helper()
	for i := 0; i < n; i++ {
		p := &pdu.PDU{Type: "m.room.message", Sender: c.sender, RoomID: c.room, Depth: c.depth, PrevEvents: c.prev,
			AuthEvents: c.auth, OriginServerTS: time.Now().UnixMilli(),
			Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"remote message %d"}`, c.depth))}
		if err := p.Sign(c.version, c.sender.Homeserver(), c.key.ID, c.key.Priv); err != nil {
			tb.Fatal(err)
		}
		evID, err := p.GetEventID(c.version)
		if err != nil {
			tb.Fatal(err)
		}
		raw, err := jsonv2.Marshal(p)
		if err != nil {
			tb.Fatal(err)
		}
		pdus = append(pdus, raw)
		c.prev, c.depth, last = []id.EventID{evID}, c.depth+1, evID
	}
	return pdus, last
}

// BenchmarkFederationInbound is PUT /_matrix/federation/v1/send/{txnId}
// over real HTTP, X-Matrix signed by remote.test (whose key hs.test fetches
// over loopback), each transaction 50 chained messages of @r:remote.test
// into one room of hs.test (where a local user is joined). One op is one
// transaction; PDUs/s is the inbound throughput.
func BenchmarkFederationInbound(b *testing.B) {
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			n := newFedNet(b, "hs.test", "remote.test")
			origin := &ingestOrigin{key: mfed.GenerateSigningKey()}
			n.relays["remote.test"].point(serveOn(b, origin))
			srv := n.start(b, backend, "hs.test")
			alice := srv.Register(b, "alice")
			room := createRoom(b, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			sender := id.UserID("@r:remote.test")
			if _, err := srv.Rooms.Input(ctx, room, remoteMember(b, srv, origin.key, room, sender, "join"), "remote.test"); err != nil {
				b.Fatalf("remote join: %v", err)
			}
			chain := newRemoteChain(b, srv, origin.key, room, sender)
			client := n.client(b, "remote.test", origin.key)
			txn := 0
			b.Run("txn50", func(b *testing.B) {
				var last id.EventID
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					pdus, l := chain.next(b, ingestMaxPDUs)
					last = l
					txn++
					req := &mfed.ReqSendTransaction{Destination: "hs.test", TxnID: fmt.Sprint("bench", txn), Origin: "remote.test",
						OriginServerTS: jsontime.UM(time.Now()), PDUs: pdus}
					b.StartTimer()
					resp, err := client.SendTransaction(ctx, req)
					if err != nil {
						b.Fatalf("transaction %d: %v", txn, err)
					}
					if len(resp.PDUs) != len(pdus) {
						b.Fatalf("transaction %d: %d results for %d PDUs", txn, len(resp.PDUs), len(pdus))
					}
					for evID, r := range resp.PDUs {
						if r.Error != "" {
							b.Fatalf("transaction %d: %s refused: %s", txn, evID, r.Error)
						}
					}
				}
				b.StopTimer()
				// Accepted, not soft-failed: the chain's last event is the room's only head.
				row, err := srv.DB.GetRoom(ctx, string(room))
				if err != nil {
					b.Fatal(err)
				}
				if len(row.Extremities) != 1 || row.Extremities[0] != string(last) {
					b.Fatalf("room head %v, want the chain's last event %s", row.Extremities, last)
				}
				b.ReportMetric(float64(ingestMaxPDUs*b.N)/b.Elapsed().Seconds(), "PDUs/s")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/txn")
			})
		})
	}
}

// ingestMaxPDUs is the spec's limit of PDUs in one transaction.
const ingestMaxPDUs = 50

// joinLocalMembers joins n new local users of srv to room through the
// writer, concurrently (the joins group-commit): the fastest way to a big
// room with real, signed member events.
func joinLocalMembers(tb testing.TB, srv *testserver.Server, room id.RoomID, n int) {
	tb.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := srv.Rooms.Join(ctx, srv.UserID(fmt.Sprintf("m%05d", i)), string(room), ""); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// BenchmarkFederationJoin2000: a.test hosts a public room with 2,000 joined
// members; one op is a user of a fresh server joining it by room ID through
// a.test (make_join, send_join, the answer's 2,000 member events verified and
// imported) until the room is usable: the join call returned and the user's
// initial /sync (lazy-loaded members, as Element sends it) shows the room.
// Each op needs a server new to the room, and every server name must be known
// before a.test starts: at most joinSpares ops per run (-benchtime=Nx).
func BenchmarkFederationJoin2000(b *testing.B) {
	const members = 2000
	names := []string{"a.test"}
	for i := range joinSpares {
		names = append(names, fmt.Sprintf("j%d.test", i))
	}
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			n := newFedNet(b, names...)
			a := n.start(b, backend, "a.test")
			alice := a.Register(b, "alice")
			room := createRoom(b, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			start := time.Now()
			joinLocalMembers(b, a, room, members-1)
			joined := time.Since(start)
			// The joins reach a.test's federation sender through its
			// follower: let it catch up before timing (it costs CPU).
			followerAt(b, a, a.DB.Stream.Current(), 10*time.Minute)
			b.Logf("setup: %d joins in %s, federation sender caught up %s later", members-1, joined, time.Since(start)-joined)
			if got := must(alice.JoinedMembers(ctx, room)); len(got.Joined) != members {
				b.Fatalf("room has %d members, want %d", len(got.Joined), members)
			}
			used := 0
			parent := b
			b.Run("join", func(b *testing.B) {
				var joinTime time.Duration
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					if used == joinSpares {
						b.Fatalf("more than %d joins: run with -benchtime=Nx, N ≤ %d", joinSpares, joinSpares)
					}
					name := names[1+used]
					used++
					// Started on the parent: the servers that joined stay up
					// (later joiners fetch their keys to verify their joins).
					s := n.start(parent, backend, name)
					u := s.Register(b, "joiner")
					f, err := u.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{
						State: &mautrix.FilterPart{LazyLoadMembers: true}, Timeline: &mautrix.FilterPart{Limit: 20}}})
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					start := time.Now()
					if _, err := u.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
						b.Fatalf("join through a.test: %v", err)
					}
					joinTime += time.Since(start)
					resp, err := u.SyncRequest(ctx, 0, "", f.FilterID, false, event.PresenceOffline)
					if err != nil {
						b.Fatal(err)
					}
					if _, ok := resp.Rooms.Join[room]; !ok {
						b.Fatalf("%s: the room is not in /sync after the join", name)
					}
				}
				b.StopTimer()
				b.ReportMetric(joinTime.Seconds()/float64(b.N), "s-join-call")
				b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s-usable")
			})
		})
	}
}

// joinSpares is how many joiner servers BenchmarkFederationJoin2000 can use per backend.
const joinSpares = 10

// arrival is an event seen in a long-polling /sync, and when.
type arrival struct {
	eventID id.EventID
	at      time.Time
}

// listen keeps c in a /sync long-poll, as a client would, and reports each
// timeline event of room as it arrives.
func listen(tb testing.TB, c *mautrix.Client, room id.RoomID) <-chan arrival {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	since := must(c.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)).NextBatch
	ch := make(chan arrival, 1024)
	done := make(chan struct{})
	tb.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			resp, err := c.SyncRequest(ctx, 30000, since, "", false, event.PresenceOffline)
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			now := time.Now()
			since = resp.NextBatch
			if jr, ok := resp.Rooms.Join[room]; ok {
				for _, e := range jr.Timeline.Events {
					select {
					case ch <- arrival{e.ID, now}:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return ch
}

// waitArrival waits for evID on ch (skipping other events) and returns
// its delay after start.
func waitArrival(tb testing.TB, ch <-chan arrival, evID id.EventID, start time.Time, who string) time.Duration {
	tb.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case a := <-ch:
			if a.eventID == evID {
				return a.at.Sub(start)
			}
		case <-timeout:
			tb.Fatalf("%s: %s not in /sync after 30 s", who, evID)
		}
	}
}

// percentile of ds (sorted in place), in milliseconds.
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := min(len(ds)-1, int(float64(len(ds))*p/100))
	return float64(ds[i].Microseconds()) / 1000
}

// BenchmarkFederationOutbound: a user of a.test sends a message into a room
// joined by a user on each of 5 other Myelin servers, each in a /sync
// long-poll; one op is one send until all 5 have it. The metrics are the
// delay from the start of the send to the event in each server's /sync
// (p50/p99 over sends × servers), and the p99 of the slowest of the 5.
func BenchmarkFederationOutbound(b *testing.B) { benchFederationOutbound(b, nil) }

// BenchmarkFederationOutboundResidency is BenchmarkFederationOutbound with
// the residency policy on at a.test: every PDU decided per destination when
// queued and when its transaction is built (a zone "all" covers the
// destinations and holds the room).
func BenchmarkFederationOutboundResidency(b *testing.B) {
	benchFederationOutbound(b, func(c *config.Config) {
		c.Residency = config.Residency{Enabled: true, Zone: "a",
			Zones: []config.ResidencyZone{{Name: "a", Servers: []string{"a.test"}},
				{Name: "all", Servers: []string{"*"}, Includes: []string{"a"}}},
			Rooms: config.ResidencyRooms{DefaultZone: "all"}}
	})
}

func benchFederationOutbound(b *testing.B, configureA func(*config.Config)) {
	const servers = 5
	names := []string{"a.test"}
	for i := 1; i <= servers; i++ {
		names = append(names, fmt.Sprintf("s%d.test", i))
	}
	fast := func(c *config.Config) {
		c.Federation.Sender.MinBackoff.Duration = 100 * time.Millisecond
		c.Federation.Sender.MaxBackoff.Duration = time.Second
	}
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			n := newFedNet(b, names...)
			configure := []func(*config.Config){fast}
			if configureA != nil {
				configure = append(configure, configureA)
			}
			a := n.start(b, backend, "a.test", configure...)
			alice := a.Register(b, "alice")
			room := createRoom(b, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			var feeds []<-chan arrival
			for _, name := range names[1:] {
				s := n.start(b, backend, name, fast)
				u := s.Register(b, "u")
				if _, err := u.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
					b.Fatalf("%s joins: %v", name, err)
				}
				feeds = append(feeds, listen(b, u, room))
			}
			// Warm up: keys fetched, connections open, every server in the room.
			warm := sendText(b, alice, room, "warm-up")
			for i, ch := range feeds {
				waitArrival(b, ch, warm, time.Now(), names[1+i])
			}
			sent := 0
			b.Run("send", func(b *testing.B) {
				var each, slowest []time.Duration
				for i := 0; i < b.N; i++ {
					sent++
					start := time.Now()
					evID := sendText(b, alice, room, fmt.Sprint("message ", sent))
					var worst time.Duration
					for j, ch := range feeds {
						d := waitArrival(b, ch, evID, start, names[1+j])
						each = append(each, d)
						worst = max(worst, d)
					}
					slowest = append(slowest, worst)
				}
				b.ReportMetric(percentile(each, 50), "p50-ms")
				b.ReportMetric(percentile(each, 99), "p99-ms")
				b.ReportMetric(percentile(slowest, 99), "p99-slowest-ms")
			})
		})
	}
}

// followerAt waits until srv's federation sender follower has handled the
// stream up to pos.
func followerAt(tb testing.TB, srv *testserver.Server, pos int64, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, f := range srv.Followers {
			if f.Name() == federationsender.FollowerName && f.Position() >= pos {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the federation sender's follower did not reach %d within %s", pos, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// heapInUse is the Go heap in use after a full collection, in MiB.
func heapInUse() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// BenchmarkFederationQueueMemory: hs.test's room has a member on remote.test,
// which is unreachable; one op is one local message queued for it (sent
// through the writer, 64 senders at once; the federation sender sees it
// through its stream follower, as in production). Run it with
// -benchtime=100000x: the metrics are the Go heap in use before and after
// (after a GC) and the queue rows the store keeps (the trim bounds a failing
// destination's queue at federation.sender.max_queued_per_room per room).
func BenchmarkFederationQueueMemory(b *testing.B) {
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			n := newFedNet(b, "hs.test", "remote.test")
			origin := &ingestOrigin{key: mfed.GenerateSigningKey()}
			remote := n.relays["remote.test"]
			remote.point(serveOn(b, origin))
			srv := n.start(b, backend, "hs.test")
			alice := srv.Register(b, "alice")
			room := createRoom(b, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := srv.Rooms.Input(ctx, room, remoteMember(b, srv, origin.key, room, "@r:remote.test", "join"), "remote.test"); err != nil {
				b.Fatalf("remote join: %v", err)
			}
			remote.point("") // remote.test goes down
			remote.cut()
			sendText(b, alice, room, "first")
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				st, err := srv.DB.FederationDestinationState(ctx, "remote.test")
				if err != nil {
					b.Fatal(err)
				}
				if st.Failures > 0 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("the sender never failed to reach remote.test")
				}
			}
			followerAt(b, srv, srv.DB.Stream.Current(), time.Minute)
			before := heapInUse()

			b.ResetTimer()
			var wg sync.WaitGroup
			next := make(chan int)
			var errOnce sync.Once
			var sendErr error
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						if _, err := srv.Rooms.Send(ctx, roomserver.SendRequest{Sender: alice.UserID, DeviceID: alice.DeviceID, RoomID: room,
							Type: "m.room.message", Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"queued %d"}`, i))}); err != nil {
							errOnce.Do(func() { sendErr = err })
						}
					}
				}()
			}
			for i := range b.N {
				next <- i
			}
			close(next)
			wg.Wait()
			if sendErr != nil {
				b.Fatal(sendErr)
			}
			followerAt(b, srv, srv.DB.Stream.Current(), 10*time.Minute)
			b.StopTimer()
			after := heapInUse()
			_, total, err := srv.DB.FederationQueueStats(ctx, 1)
			if err != nil {
				b.Fatal(err)
			}
			if max := int64(2 * srv.Config.Federation.Sender.MaxQueuedPerRoom); total.Depth > max {
				b.Errorf("%d events queued for the unreachable destination: the trim did not bound the queue (%d)", total.Depth, max)
			}
			b.ReportMetric(before, "heap-before-MiB")
			b.ReportMetric(after, "heap-after-MiB")
			b.ReportMetric(float64(total.Depth), "queue-rows")
		})
	}
}
