package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

// BenchmarkRecordFlow: one op is one flow record queued and, by Close,
// written; the chain verifies. Within the queue's size (-benchtime 2000x)
// ns/op is what the sender's worker pays; records/s is the writer's
// capacity, batched as in production (beyond the queue's size ns/op is
// that capacity too: Record waits).
func BenchmarkRecordFlow(b *testing.B) {
	for _, backend := range pgtest.Backends {
		b.Run(backend, func(b *testing.B) {
			db, err := storage.Open(context.Background(), pgtest.StoreURL(b, backend), 4)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			l, err := audit.New(audit.Options{Store: db})
			if err != nil {
				b.Fatal(err)
			}
			f := audit.Flow{Direction: audit.Outbound, Server: "b.test", Rooms: map[string]int{"!room:a.test": 3}, PDUs: 3,
				EDUs: map[string]int{"m.typing": 1, "m.receipt": 1}, Bytes: 4000}
			start := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f.TxnID = fmt.Sprint("t", i)
				l.Flow("a.test", f)
			}
			b.StopTimer()
			l.Close()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
			v, err := audit.Verify(context.Background(), db)
			if err != nil || v.Problem != nil || v.Records != int64(b.N) {
				b.Fatalf("verify: %+v %v", v, err)
			}
		})
	}
}
