package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/ingest"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/notifier"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/roomserver"
)

// groupRooms is the roomserver as ingest sees it, recording the sizes of the
// groups it is given; single makes every group go the one-PDU-at-a-time way
// (each PDU through Input, waiting for its commit), as ingest did before
// groups: the reference the grouped outcome must equal.
type groupRooms struct {
	*roomserver.Server
	single bool
	mu     sync.Mutex
	groups []int
}

func (g *groupRooms) InputGroup(ctx context.Context, roomID id.RoomID, raws [][]byte, origin string) []roomserver.GroupResult {
	g.mu.Lock()
	g.groups = append(g.groups, len(raws))
	g.mu.Unlock()
	if g.single {
		out := make([]roomserver.GroupResult, len(raws))
		for i := range out {
			out[i].Err = roomserver.ErrNotAttempted
		}
		return out
	}
	return g.Server.InputGroup(ctx, roomID, raws, origin)
}

// chainOutcome is what a transaction left, with event IDs replaced by the
// PDU's index in the transaction (#i), L (the local ban) or "other", so that
// two worlds compare.
type chainOutcome struct {
	results     []string // per PDU
	stored      []string // per PDU: "-" absent, else "softfailed=…,outlier=…"
	extremities []string
	r2Member    string
}

// chainScenario: @r and @r2 of remote.test joined; then the owner bans @r2
// locally, while remote.test (not yet aware of the ban) sends 50 PDUs built on
// the state before it. PDU 20 (index 19) carries a bad signature; PDU 21
// builds on PDU 19, skipping it; PDU 22 builds on the rejected PDU 20 (a
// dependant: its prev stays unknown, get_missing_events returns nothing);
// PDU 23 on 21 and so on; PDU 30 is sent by @r2, allowed by the state before
// it (r2 joined) but not by the current state (banned): soft-failed; PDUs
// 31… build on it.
func chainScenario(t *testing.T, backend string, single bool) (*chainOutcome, *groupRooms) {
	ctx := context.Background()
	w := newWorld(t, backend)
	g := &groupRooms{Server: w.rs, single: single}
	eng, err := ingest.New(ingest.Options{Rooms: g, Store: w.db, Remote: w.remote, Keys: w.keys})
	if err != nil {
		t.Fatal(err)
	}
	w.eng = eng
	w.join(t)
	r2 := id.UserID("@r2:remote.test")
	prevs, depth := w.head(t)
	j2 := w.event(t, "remote.test", r2, "m.room.member", sk(string(r2)), map[string]string{"membership": "join"}, prevs, depth)
	if res, err := eng.Transaction(ctx, "remote.test", "join2", txnBody(raw(t, j2))); err != nil || res[string(w.eventID(t, j2))] != "" {
		t.Fatalf("r2 join: %v %v", res, err)
	}
	prevs, depth = w.head(t)
	version := id.RoomVersion(w.version(t))
	// Auth events before the ban.
	authOf := map[id.UserID][]id.EventID{}
	for _, u := range []id.UserID{ruser, r2} {
		for _, k := range []struct{ typ, key string }{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.member", string(u)}} {
			se, err := w.db.CurrentStateEvent(ctx, string(w.room), k.typ, k.key)
			if err != nil {
				t.Fatal(err)
			}
			authOf[u] = append(authOf[u], id.EventID(se.EventID))
		}
	}
	if err := w.rs.ChangeMembership(ctx, roomserver.MembershipAction{Sender: w.owner, RoomID: w.room, Target: r2, Action: "ban"}); err != nil {
		t.Fatal(err)
	}
	banSE, err := w.db.CurrentStateEvent(ctx, string(w.room), "m.room.member", string(r2))
	if err != nil {
		t.Fatal(err)
	}
	label := map[id.EventID]string{id.EventID(banSE.EventID): "L",
		id.EventID(w.keys["remote.test"].ID): "KEY"} // in error messages: the same key as another world's

	const n = 50
	ids := make([]id.EventID, n)
	raws := make([]json.RawMessage, n)
	for i := range n {
		sender := ruser
		if i == 29 {
			sender = r2
		}
		var prev []id.EventID
		switch {
		case i == 0:
			prev = prevs
		case i == 20: // PDU 21 skips the rejected PDU 20
			prev = []id.EventID{ids[18]}
		case i == 21: // PDU 22 builds on the rejected PDU 20
			prev = []id.EventID{ids[19]}
		case i == 22: // PDU 23 builds on PDU 21, past the dependant PDU 22
			prev = []id.EventID{ids[20]}
		default:
			prev = []id.EventID{ids[i-1]}
		}
		p := &pdu.PDU{Type: "m.room.message", Sender: sender, Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"m%d"}`, i+1)),
			RoomID: w.room, PrevEvents: prev, AuthEvents: authOf[sender], Depth: depth + int64(i), OriginServerTS: time.Now().UnixMilli()}
		key := w.keys["remote.test"]
		priv := key.Priv
		if i == 19 {
			priv = w.keys["other.test"].Priv // under remote.test's key ID: a bad signature
		}
		if err := p.Sign(version, "remote.test", key.ID, priv); err != nil {
			t.Fatal(err)
		}
		ids[i] = w.eventID(t, p)
		label[ids[i]] = fmt.Sprintf("#%d", i+1)
		raws[i] = raw(t, p)
	}
	res, err := eng.Transaction(ctx, "remote.test", "chain", txnBody(raws...))
	if err != nil {
		t.Fatal(err)
	}
	relabel := func(s string) string {
		for x, l := range label {
			s = strings.ReplaceAll(s, string(x), l)
		}
		return s
	}
	out := &chainOutcome{}
	for _, x := range ids {
		r, ok := res[string(x)]
		if !ok {
			r = "(no result)"
		}
		out.results = append(out.results, relabel(r))
		if se := w.stored(t, x); se == nil {
			out.stored = append(out.stored, "-")
		} else {
			out.stored = append(out.stored, fmt.Sprintf("softfailed=%v,outlier=%v", se.SoftFailed, se.Outlier))
		}
	}
	row, err := w.db.GetRoom(ctx, string(w.room))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range row.Extremities {
		l, ok := label[id.EventID(x)]
		if !ok {
			l = "other"
		}
		out.extremities = append(out.extremities, l)
	}
	slices.Sort(out.extremities)
	m, err := w.db.CurrentStateEvent(ctx, string(w.room), "m.room.member", string(r2))
	if err != nil {
		t.Fatal(err)
	}
	out.r2Member = label[id.EventID(m.EventID)]
	return out, g
}

// TestGroupedChain: a transaction of 50 chained PDUs, one rejected for its
// signature, one depending on it, one soft-failed, gets exactly the results
// and stored rows it got when each PDU was input and committed on its own;
// and the chain went to the writer as groups.
func TestGroupedChain(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			got, g := chainScenario(t, backend, false)
			want, _ := chainScenario(t, backend, true)
			for i := range got.results {
				if got.results[i] != want.results[i] || got.stored[i] != want.stored[i] {
					t.Errorf("PDU %d: grouped %q %s, one at a time %q %s", i+1, got.results[i], got.stored[i], want.results[i], want.stored[i])
				}
			}
			if !slices.Equal(got.extremities, want.extremities) || got.r2Member != want.r2Member {
				t.Errorf("room: grouped extremities %v r2 %s, one at a time %v r2 %s", got.extremities, got.r2Member, want.extremities, want.r2Member)
			}
			// The outcomes themselves.
			for i, r := range got.results {
				switch pdu := i + 1; {
				case pdu == 20:
					if !strings.Contains(r, "signature") || got.stored[i] != "-" {
						t.Errorf("PDU 20: %q %s, want a signature rejection, not stored", r, got.stored[i])
					}
				case pdu == 22:
					if !strings.Contains(r, "prev events unknown") || !strings.Contains(r, "#20") || got.stored[i] != "-" {
						t.Errorf("PDU 22: %q %s, want its prev #20 unknown, not stored", r, got.stored[i])
					}
				case pdu == 30:
					if r != "" || got.stored[i] != "softfailed=true,outlier=false" {
						t.Errorf("PDU 30: %q %s, want accepted and soft-failed", r, got.stored[i])
					}
				default:
					if r != "" || got.stored[i] != "softfailed=false,outlier=false" {
						t.Errorf("PDU %d: %q %s, want accepted", pdu, r, got.stored[i])
					}
				}
			}
			if got.r2Member != "L" {
				t.Errorf("r2's membership is %s, want the ban", got.r2Member)
			}
			if !slices.Contains(got.extremities, "#50") || !slices.Contains(got.extremities, "L") {
				t.Errorf("extremities %v, want #50 and the ban among them", got.extremities)
			}
			// One group for the transaction; it stops at PDU 22 (its prev
			// rejected), which goes alone, and the rest is one group again.
			if want := []int{50, 28}; len(g.groups) < 2 || !slices.Equal(g.groups[len(g.groups)-2:], want) {
				t.Errorf("groups %v, want the transaction's to be %v", g.groups, want)
			}
		})
	}
}

// TestGroupedChainRestart: a chain committed as a group is the room's state
// for a roomserver started afresh on the same store: the next transaction
// builds on it, and a retry of the first is answered from the store.
func TestGroupedChainRestart(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, backend)
			w.join(t)
			chain := func(n int) ([]json.RawMessage, []id.EventID) {
				prevs, depth := w.head(t)
				var raws []json.RawMessage
				var ids []id.EventID
				for i := range n {
					p := w.event(t, "remote.test", ruser, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": fmt.Sprint(i)}, prevs, depth+int64(i))
					x := w.eventID(t, p)
					raws, ids, prevs = append(raws, raw(t, p)), append(ids, x), []id.EventID{x}
				}
				return raws, ids
			}
			raws, first := chain(30)
			res1, err := w.eng.Transaction(ctx, "remote.test", "t1", txnBody(raws...))
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range first {
				if res1[string(x)] != "" {
					t.Fatalf("t1: %s: %q", x, res1[string(x)])
				}
			}
			// Restart: a new roomserver and engine on the same store.
			cfg := config.Default()
			cfg.ServerName = "test.local"
			rs, err := roomserver.New(ctx, roomserver.Options{Store: w.db, Stream: w.db.Stream, Config: cfg, SigningKey: mfed.GenerateSigningKey(),
				Notifier: notifier.New(w.db.Stream.Current()), Keys: w.keys})
			if err != nil {
				t.Fatal(err)
			}
			if w.eng, err = ingest.New(ingest.Options{Rooms: rs, Store: w.db, Remote: w.remote, Keys: w.keys}); err != nil {
				t.Fatal(err)
			}
			w.rs = rs
			if again, err := w.eng.Transaction(ctx, "remote.test", "t1", txnBody(raws...)); err != nil || len(again) != len(res1) {
				t.Fatalf("retry of t1: %v %v", again, err)
			}
			raws, second := chain(30)
			res2, err := w.eng.Transaction(ctx, "remote.test", "t2", txnBody(raws...))
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range second {
				if res2[string(x)] != "" {
					t.Fatalf("t2: %s: %q", x, res2[string(x)])
				}
				if se := w.stored(t, x); se == nil || se.SoftFailed || se.Outlier {
					t.Fatalf("t2: %s stored as %+v", x, se)
				}
			}
			if head, _ := w.head(t); !slices.Equal(head, []id.EventID{second[len(second)-1]}) {
				t.Errorf("extremities %v, want the second chain's last %s", head, second[len(second)-1])
			}
			// Every event of both chains has its own stream position, in order.
			var last int64
			for _, x := range append(first, second...) {
				se := w.stored(t, x)
				if se.StreamPos <= last {
					t.Fatalf("%s at %d, not after %d", x, se.StreamPos, last)
				}
				last = se.StreamPos
			}
		})
	}
}
