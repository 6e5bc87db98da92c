package ephemeral

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/myelin-chat/myelin/internal/metrics"
	"github.com/myelin-chat/myelin/internal/recovery"
)

// TestTypingExpiryPanicIsRecovered: a panic in the expiry callback, which
// runs on a timer goroutine, is recovered and counted; typing goes on.
func TestTypingExpiryPanicIsRecovered(t *testing.T) {
	var armed atomic.Bool
	ty := NewTyping(func(string, string, bool) {
		if armed.Load() {
			panic("test panic in the typing callback")
		}
	})
	counter := metrics.PanicsRecovered.WithLabelValues(recovery.TypingTimer)
	before := testutil.ToFloat64(counter)
	ty.Set("!r", "@a", true, time.Millisecond)
	armed.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(counter) == before {
		if time.Now().After(deadline) {
			t.Fatal("expiry never ran")
		}
		time.Sleep(time.Millisecond)
	}
	armed.Store(false)
	if users, _ := ty.Since("!r", 0); len(users) != 0 {
		t.Fatalf("expired user still typing: %v", users)
	}
	ty.Set("!r", "@b", true, time.Hour)
	if users, _ := ty.Since("!r", 0); len(users) != 1 {
		t.Fatalf("typing after the panic: %v", users)
	}
}
