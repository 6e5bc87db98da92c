package ephemeral

import (
	"testing"
	"time"
)

func TestTypingSerialsAndExpiry(t *testing.T) {
	changed := make(chan string, 10)
	ty := NewTyping(func(room, _ string, _ bool) { changed <- room })
	s0 := ty.Serial()
	ty.Set("!r", "@a", true, time.Hour)
	if users, ch := ty.Since("!r", s0); !ch || len(users) != 1 || users[0] != "@a" {
		t.Fatalf("after start: %v %v", users, ch)
	}
	s1 := ty.Serial()
	if _, ch := ty.Since("!r", s1); ch {
		t.Fatal("unchanged list reported as changed")
	}
	ty.Set("!r", "@a", true, time.Hour) // refresh: no change
	if _, ch := ty.Since("!r", s1); ch {
		t.Fatal("refresh reported as change")
	}
	ty.Set("!r", "@b", true, 20*time.Millisecond)
	<-changed
	<-changed
	select {
	case room := <-changed: // @b expired
		if room != "!r" {
			t.Fatalf("expiry woke %s", room)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("typing did not expire")
	}
	if users, ch := ty.Since("!r", s1); !ch || len(users) != 1 || users[0] != "@a" {
		t.Fatalf("after expiry: %v %v", users, ch)
	}
	ty.Set("!r", "@a", false, 0)
	if users, ch := ty.Since("!r", s1); !ch || len(users) != 0 {
		t.Fatalf("after stop: %v %v", users, ch)
	}
}
