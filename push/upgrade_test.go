package push

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// flakyRules keeps push rules in memory and fails the next failReads reads
// and failWrites writes of them, as a store that is briefly unavailable.
type flakyRules struct {
	Store                 // the rest is never called
	rules                 map[string]string
	failReads, failWrites int
}

var errStoreDown = errors.New("store down")

func (f *flakyRules) PushRules(_ context.Context, userID string) (string, int64, error) {
	if f.failReads > 0 {
		f.failReads--
		return "", 0, errStoreDown
	}
	r, ok := f.rules[userID]
	if !ok {
		return "", 0, storage.ErrNotFound
	}
	return r, 1, nil
}

func (f *flakyRules) UpdatePushRules(_ context.Context, userID string, _ int64, update func(string) (string, error)) error {
	if f.failWrites > 0 {
		f.failWrites--
		return errStoreDown
	}
	next, err := update(f.rules[userID])
	if err != nil {
		return err
	}
	f.rules[userID] = next
	return nil
}

func (f *flakyRules) UsersWithPushRulesMentioning(_ context.Context, text string) ([]string, error) {
	var users []string
	for u, r := range f.rules {
		if strings.Contains(r, text) {
			users = append(users, u)
		}
	}
	return users, nil
}

type joinedRoom struct {
	Rooms
	members []string
}

func (r joinedRoom) JoinedMembers(context.Context, string) ([]string, error) { return r.members, nil }

type counter struct{ pos int64 }

func (c *counter) Allocate() (int64, func(), error) { c.pos++; return c.pos, func() {}, nil }
func (c *counter) Current() int64                   { return c.pos }

type nobody struct{}

func (nobody) Notify(int64, ...string) {}

// TestCopyPushRulesOnUpgradeRetriesStoreFailures: a store failure while a
// member's rules are read or written fails the page, so that the follower
// retries it and the rules are copied then; a member whose rules do not
// parse is skipped, the others' rules copied.
func TestCopyPushRulesOnUpgradeRetriesStoreFailures(t *testing.T) {
	ctx := context.Background()
	empty := ""
	tombstone := []*storage.Event{{EventID: "$t", RoomID: "!old:x", Type: "m.room.tombstone", StateKey: &empty,
		JSON: []byte(`{"type":"m.room.tombstone","state_key":"","content":{"replacement_room":"!new:x"}}`)}}
	const muted = `{"user":{"room":[{"rule_id":"!old:x","default":false,"enabled":true,"actions":["dont_notify"]}]}}`
	for _, c := range []struct {
		name                  string
		failReads, failWrites int
	}{{"read fails once", 1, 0}, {"write fails once", 0, 1}} {
		t.Run(c.name, func(t *testing.T) {
			store := &flakyRules{rules: map[string]string{
				"@a:x":      muted,
				"@broken:x": `{"user": "!old:x"`, // names the room, but does not parse
			}, failReads: c.failReads, failWrites: c.failWrites}
			s := New(Options{Store: store, Stream: &counter{}, Rooms: joinedRoom{members: []string{"@broken:x", "@a:x"}}, Notifier: nobody{}})
			if err := s.CopyPushRulesOnUpgrade(ctx, tombstone); !errors.Is(err, errStoreDown) {
				t.Fatalf("first run: %v, want the store's error (the page is retried)", err)
			}
			if err := s.CopyPushRulesOnUpgrade(ctx, tombstone); err != nil {
				t.Fatalf("retry: %v", err)
			}
			st, err := parseStored(store.rules["@a:x"])
			if err != nil {
				t.Fatal(err)
			}
			if indexOf(st.User["room"], "!new:x") < 0 || indexOf(st.User["room"], "!old:x") < 0 {
				t.Errorf("rules after the retry: %s", store.rules["@a:x"])
			}
		})
	}
}
