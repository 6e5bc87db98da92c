package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// fakeKeys answers keys of servers named "up*", fails the others, and
// counts the lookups (and which notary each was asked through).
type fakeKeys struct {
	mu      sync.Mutex
	asked   map[string]int
	notary  map[string]string
	withVia bool
}

func (f *fakeKeys) GetKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	return f.GetKeyVia(context.Background(), "", server, keyID, time.Time{})
}

func (f *fakeKeys) GetKeyVia(_ context.Context, notary, server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked[server+"|"+string(keyID)]++
	f.notary[server] = notary
	if server[:2] == "up" {
		return "key", time.Now().Add(time.Hour), nil
	}
	return "", time.Time{}, errors.New("unreachable")
}

// TestImportKeys: one import's key lookups: each (server, key ID) of the
// events asked once, up front, whatever the number of events; through the
// context's notary; and after maxImportKeyFailures failures no more asked.
func TestImportKeys(t *testing.T) {
	var events []json.RawMessage
	ev := func(server string) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"sender":"@u:%s","origin_server_ts":%d,"signatures":{%q:{"ed25519:k":"x"}}}`,
			server, time.Now().UnixMilli(), server))
	}
	for i := range 3 {
		events = append(events, ev(fmt.Sprintf("up%d.test", i)), ev(fmt.Sprintf("up%d.test", i)), ev("down.test"))
	}
	events = append(events, ev("ours.test"))
	fk := &fakeKeys{asked: map[string]int{}, notary: map[string]string{}}
	s := &Server{keys: fk, serverName: "ours.test"}
	get := s.importKeys(WithKeyNotary(context.Background(), "via.test"), events)
	if len(fk.asked) != 4 || fk.asked["down.test|ed25519:k"] != 1 || fk.asked["up0.test|ed25519:k"] != 1 || fk.asked["ours.test|ed25519:k"] != 0 {
		t.Fatalf("prefetched %v", fk.asked)
	}
	if fk.notary["up1.test"] != "via.test" {
		t.Fatalf("not asked through the notary: %v", fk.notary)
	}
	for range 3 {
		if _, _, err := get("down.test", "ed25519:k", time.Now()); err == nil {
			t.Fatal("a failed key answered")
		}
		if k, _, err := get("up2.test", "ed25519:k", time.Now().Add(-time.Minute)); err != nil || k != "key" {
			t.Fatalf("up2: %q %v", k, err)
		}
	}
	if fk.asked["down.test|ed25519:k"] != 1 || fk.asked["up2.test|ed25519:k"] != 1 {
		t.Fatalf("asked again: %v", fk.asked)
	}

	// Many unreachable servers: at most maxImportKeyFailures asked.
	events = nil
	for i := range 3 * maxImportKeyFailures {
		events = append(events, ev(fmt.Sprintf("down%d.test", i)))
	}
	fk = &fakeKeys{asked: map[string]int{}, notary: map[string]string{}}
	s.keys = fk
	get = s.importKeys(context.Background(), events)
	if _, _, err := get("down299.test", "ed25519:k", time.Now()); err == nil {
		t.Fatal("answered")
	}
	if n := len(fk.asked); n < maxImportKeyFailures || n > maxImportKeyFailures+importKeyWorkers {
		t.Fatalf("asked %d servers", n)
	}
	if fk.notary["down1.test"] != "" {
		t.Fatalf("a notary without a hint: %v", fk.notary["down1.test"])
	}
}
