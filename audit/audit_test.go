package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T, url string) (*storage.DB, *audit.Log) {
	t.Helper()
	db, err := storage.Open(context.Background(), url, 4)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.New(audit.Options{Store: db})
	if err != nil {
		t.Fatal(err)
	}
	return db, l
}

func mustVerify(t *testing.T, db *storage.DB, want int64) audit.Verified {
	t.Helper()
	v, err := audit.Verify(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if v.Problem != nil {
		t.Fatalf("verify: %v", v.Problem)
	}
	if v.Records != want {
		t.Fatalf("verified %d records, want %d", v.Records, want)
	}
	return v
}

// The chain continues from the last stored record after the store is
// closed and opened again; queued records are written by Close.
func TestChainAcrossReopen(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			url := pgtest.StoreURL(t, backend)
			db, l := open(t, url)
			if _, err := l.Append(ctx, audit.Entry{Kind: audit.KindAdminAction, Actor: "@admin:hs", Body: map[string]any{"a": 1}}); err != nil {
				t.Fatal(err)
			}
			l.Flow("hs", audit.Flow{Direction: audit.Outbound, Server: "b.test", TxnID: "t1", Rooms: map[string]int{"!r:hs": 2},
				PDUs: 2, EDUs: map[string]int{"m.typing": 1}, Bytes: 300})
			l.Close()
			head := mustVerify(t, db, 2).Head
			db.Close()

			db, l = open(t, url)
			defer db.Close()
			defer l.Close()
			recs, err := l.Append(ctx, audit.Entry{Kind: audit.KindRefusal, Actor: "hs", Body: audit.Refusal{Server: "evil.test",
				Purpose: "send", Rule: audit.RuleFederationPolicy}})
			if err != nil {
				t.Fatal(err)
			}
			if recs[0].Seq != 3 || recs[0].Prev != head {
				t.Fatalf("after reopen: seq %d prev %s, want 3 and %s", recs[0].Seq, recs[0].Prev, head)
			}
			mustVerify(t, db, 3)
			all, err := l.Records(ctx, 1, 10)
			if err != nil {
				t.Fatal(err)
			}
			var f audit.Flow
			if err := json.Unmarshal(all[1].Body, &f); err != nil {
				t.Fatal(err)
			}
			if all[1].Kind != audit.KindFlow || f.Server != "b.test" || f.Data[audit.DataEvents] != 2 || f.Data[audit.DataTyping] != 1 {
				t.Fatalf("flow record %s %s", all[1].Kind, all[1].Body)
			}
			if all[0].Prev != audit.GenesisHash {
				t.Fatalf("first record's prev %q", all[0].Prev)
			}
		})
	}
}

// Concurrent appenders, through two logs over two connections to the same
// store (as two processes would be) and the queue, never fork the chain.
func TestConcurrentAppends(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			url := pgtest.StoreURL(t, backend)
			db1, l1 := open(t, url)
			defer db1.Close()
			db2, l2 := open(t, url)
			defer db2.Close()
			const each = 40
			var wg sync.WaitGroup
			for w, l := range []*audit.Log{l1, l2, l1, l2} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						if i%2 == 0 {
							l.Flow("hs", audit.Flow{Direction: audit.Inbound, Server: fmt.Sprint("s", w), TxnID: fmt.Sprint(i), PDUs: 1})
							continue
						}
						if _, err := l.Append(ctx, audit.Entry{Kind: audit.KindAdminAction, Actor: "cli", Body: map[string]int{"w": w, "i": i}}); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			l1.Close()
			l2.Close()
			mustVerify(t, db1, 4*each)
		})
	}
}

// Verify names the first altered record (one stored byte changed with SQL)
// and the first missing one (a record deleted).
func TestVerifyDetectsTampering(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			db, l := open(t, pgtest.StoreURL(t, backend))
			defer db.Close()
			defer l.Close()
			for i := range 6 {
				if _, err := l.Append(ctx, audit.Entry{Kind: audit.KindFlow, Actor: "hs",
					Body: audit.Flow{Direction: audit.Outbound, Server: "b.test", TxnID: fmt.Sprint("t", i), PDUs: 5, Bytes: 1000}}); err != nil {
					t.Fatal(err)
				}
			}
			mustVerify(t, db, 6)

			// One byte of record 4's body: 5 PDUs become 6.
			if _, err := db.Exec(ctx, `UPDATE audit_log SET body = REPLACE(body, '"pdus":5', '"pdus":6') WHERE seq = 4`); err != nil {
				t.Fatal(err)
			}
			v, err := audit.Verify(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if v.Problem == nil || v.Problem.Seq != 4 || !strings.Contains(v.Problem.Reason, "altered") || v.Records != 3 {
				t.Fatalf("after altering record 4: %+v", v)
			}
			if _, err := db.Exec(ctx, `UPDATE audit_log SET body = REPLACE(body, '"pdus":6', '"pdus":5') WHERE seq = 4`); err != nil {
				t.Fatal(err)
			}
			mustVerify(t, db, 6)

			// A record's time moved: altered too.
			if _, err := db.Exec(ctx, `UPDATE audit_log SET ts = ts + 1 WHERE seq = 2`); err != nil {
				t.Fatal(err)
			}
			if v, _ := audit.Verify(ctx, db); v.Problem == nil || v.Problem.Seq != 2 {
				t.Fatalf("after moving record 2's time: %+v", v)
			}
			if _, err := db.Exec(ctx, `UPDATE audit_log SET ts = ts - 1 WHERE seq = 2`); err != nil {
				t.Fatal(err)
			}

			// Record 3 deleted.
			if _, err := db.Exec(ctx, `DELETE FROM audit_log WHERE seq = 3`); err != nil {
				t.Fatal(err)
			}
			v, err = audit.Verify(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if v.Problem == nil || v.Problem.Seq != 3 || !strings.Contains(v.Problem.Reason, "missing") {
				t.Fatalf("after deleting record 3: %+v", v)
			}
			// Renumbering does not hide it: record 4's prev is record 3's hash.
			if _, err := db.Exec(ctx, `UPDATE audit_log SET seq = 3 WHERE seq = 4`); err != nil {
				t.Fatal(err)
			}
			if v, _ := audit.Verify(ctx, db); v.Problem == nil || v.Problem.Seq != 3 {
				t.Fatalf("after renumbering: %+v", v)
			}
		})
	}
}

// Export selects by time, in sequence order.
func TestExportByTime(t *testing.T) {
	ctx := context.Background()
	db, err := storage.Open(ctx, pgtest.StoreURL(t, "sqlite"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l, err := audit.New(audit.Options{Store: db, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 5 {
		if _, err := l.Append(ctx, audit.Entry{Time: now.Add(time.Duration(i) * time.Hour), Kind: audit.KindAdminAction, Actor: "cli",
			Body: map[string]int{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	var got []int64
	if err := audit.Export(ctx, db, now.Add(time.Hour), now.Add(3*time.Hour), func(r audit.Record) error {
		got = append(got, r.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[2 3]" {
		t.Fatalf("exported %v, want [2 3]", got)
	}
}

// Bodies are canonical: keys sorted, numbers as written.
func TestCanonicalBody(t *testing.T) {
	got, err := audit.CanonicalBody([]byte(`{ "b": 12345678901234567890, "a": ["x", {"d":1,"c":"<"}] }`))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"a":["x",{"c":"<","d":1}],"b":12345678901234567890}` {
		t.Fatalf("canonical body %s", got)
	}
}
