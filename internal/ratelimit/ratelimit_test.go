package ratelimit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	now := time.Unix(0, 0)
	l := New(1, 2)
	l.now = func() time.Time { return now }
	for i := 0; i < 2; i++ {
		if ok, _ := l.Allow("k"); !ok {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	if blocked, _ := l.Blocked("k"); !blocked {
		t.Fatal("Blocked after the burst = false")
	}
	ok, wait := l.Allow("k")
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("past the burst: ok=%v wait=%v", ok, wait)
	}
	if blocked, _ := l.Blocked("other"); blocked {
		t.Fatal("an unseen key is blocked")
	}
	now = now.Add(1500 * time.Millisecond)
	if blocked, _ := l.Blocked("k"); blocked {
		t.Fatal("still blocked after refilling")
	}
	if ok, _ := l.Allow("k"); !ok {
		t.Fatal("refilled token refused")
	}
}
