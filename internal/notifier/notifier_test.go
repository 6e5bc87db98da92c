package notifier

import (
	"context"
	"testing"
	"time"
)

func waitAsync(n *Notifier, user string, after int64) <-chan bool {
	ch := make(chan bool, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ch <- n.Wait(ctx, user, after)
	}()
	time.Sleep(20 * time.Millisecond) // let the waiter register
	return ch
}

func TestWakeWaitsForSafePosition(t *testing.T) {
	n := New(10)
	got := waitAsync(n, "@u:x", 10)
	n.Notify(12, "@u:x") // position 11 still in flight: not safe yet
	select {
	case <-got:
		t.Fatal("woken before the stream was safe up to the notified position")
	case <-time.After(50 * time.Millisecond):
	}
	n.Advanced(12)
	if !<-got {
		t.Fatal("not woken once safe")
	}
}

func TestAlreadyDeliveredReturnsAtOnce(t *testing.T) {
	n := New(0)
	n.Advanced(5)
	n.Notify(5, "@u:x")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if !n.Wait(ctx, "@u:x", 4) {
		t.Fatal("a position delivered before Wait must return at once")
	}
}

func TestOtherUsersNotWoken(t *testing.T) {
	n := New(0)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	go func() { time.Sleep(10 * time.Millisecond); n.Advanced(1); n.Notify(1, "@other:x") }()
	if n.Wait(ctx, "@u:x", 0) {
		t.Fatal("woken by another user's position")
	}
}

// A Wake between a reader's WakeMark and its WaitMarked is not lost.
func TestWakeAfterMarkIsSticky(t *testing.T) {
	n := New(0)
	mark := n.WakeMark()
	n.Wake("@u:x") // before the waiter registers
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if !n.WaitMarked(ctx, "@u:x", 0, mark) {
		t.Fatal("a Wake after the mark must make WaitMarked return at once")
	}
	// A mark taken after the Wake waits again.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if n.WaitMarked(ctx2, "@u:x", 0, n.WakeMark()) {
		t.Fatal("an old Wake woke a waiter whose mark covers it")
	}
	// Another user's Wake does not count.
	mark = n.WakeMark()
	n.Wake("@other:x")
	ctx3, cancel3 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel3()
	if n.WaitMarked(ctx3, "@u:x", 0, mark) {
		t.Fatal("woken by another user's Wake")
	}
}

func TestCloseEndsWaits(t *testing.T) {
	n := New(0)
	got := waitAsync(n, "@u:x", 0)
	n.Close()
	select {
	case woken := <-got:
		if woken {
			t.Fatal("a wait ended by Close must report false, like a timeout")
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not end a running wait")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	if n.Wait(ctx, "@u:x", 0) || time.Since(start) > 500*time.Millisecond {
		t.Fatal("a wait after Close must return false at once")
	}
}
