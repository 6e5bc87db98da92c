package federationsender

import (
	"testing"
	"time"
)

func TestBackoffDoublesToCap(t *testing.T) {
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second}
	for i, w := range want {
		if got := Backoff(int64(i+1), 5*time.Second, time.Hour); got != w {
			t.Fatalf("Backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	for _, f := range []int64{11, 12, 64, 1 << 40} {
		if got := Backoff(f, 5*time.Second, time.Hour); got != time.Hour {
			t.Fatalf("Backoff(%d) = %v, want the 1h cap", f, got)
		}
	}
}

func TestTxnIDStablePerBatch(t *testing.T) {
	if TxnID(42) != TxnID(42) || TxnID(42) == TxnID(43) {
		t.Fatal("transaction IDs must name the batch's last position, and only it")
	}
}
