package recovery

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/myelin-chat/myelin/internal/metrics"
)

const testWhere = "test"

func TestCall(t *testing.T) {
	counter := metrics.PanicsRecovered.WithLabelValues(testWhere)
	before := testutil.ToFloat64(counter)
	want := errors.New("plain error")
	if err := Call(testWhere, func() error { return want }); err != want {
		t.Fatalf("error passed through as %v", err)
	}
	err := Call(testWhere, func() error { panic("boom") }, "key", "value")
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Where != testWhere || pe.Value != "boom" {
		t.Fatalf("err = %#v", err)
	}
	if d := testutil.ToFloat64(counter) - before; d != 1 {
		t.Fatalf("counted %v panics, want 1", d)
	}
}

func TestGoAndFunc(t *testing.T) {
	counter := metrics.PanicsRecovered.WithLabelValues(testWhere)
	before := testutil.ToFloat64(counter)
	var wg sync.WaitGroup
	wg.Add(2)
	Go(testWhere, func() { defer wg.Done(); panic("in a goroutine") })
	go Func(testWhere, func() { defer wg.Done(); panic("in a callback") })()
	wg.Wait()
	// wg.Done runs before the recovery; wait for the count.
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(counter)-before < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("counted %v panics, want 2", testutil.ToFloat64(counter)-before)
		}
		time.Sleep(time.Millisecond)
	}
}
