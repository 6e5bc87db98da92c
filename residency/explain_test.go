package residency

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// explainStore holds rooms' facts and no recorded zone; it has no write
// method, so Explain cannot record.
type explainStore struct{ facts map[string]storage.RoomFacts }

func (s explainStore) GetRoomResidency(context.Context, string) (storage.RoomResidency, error) {
	return storage.RoomResidency{}, storage.ErrNotFound
}

func (s explainStore) GetRoomFacts(_ context.Context, roomID string) (storage.RoomFacts, error) {
	f, ok := s.facts[roomID]
	if !ok {
		return storage.RoomFacts{}, storage.ErrNotFound
	}
	return f, nil
}

func (s explainStore) RoomEncrypted(context.Context, string) (bool, error) { return false, nil }

// TestExplain: a room not yet recorded is classified from its state (an
// #eu-* alias: zone eu, which requires encryption, so join is refused until
// the room is encrypted); the server's placement says why; a room the store
// knows nothing of is ErrUnknownRoom; without a room the server-level kinds.
func TestExplain(t *testing.T) {
	ctx := context.Background()
	rules, _ := Compile(testConfig(t), &TrustList{Version: 3, Servers: map[string]string{"friend.example": "eu"}})
	store := explainStore{facts: map[string]storage.RoomFacts{
		"!eu:a1.example": {Creator: "@x:a1.example", Aliases: []string{"#eu-law:a1.example"}}}}
	e, err := Explain(ctx, rules, store, "!eu:a1.example", "friend.example")
	if err != nil {
		t.Fatal(err)
	}
	if e.ServerZone != "eu" || e.ZoneSource != "trust_list" || !strings.Contains(e.ServerReason, "version 3") ||
		e.RoomZone != "eu" || e.RoomRule != "residency.rooms.rules[0]" || e.RoomRecorded {
		t.Fatalf("explanation = %+v", e)
	}
	byKind := map[string]KindExplanation{}
	for _, k := range e.Kinds {
		byKind[k.Kind] = k
	}
	if j := byKind["join"]; j.Allowed || j.Rule != "residency.zones.eu.require_encryption" {
		t.Fatalf("join = %+v", j)
	}
	if p := byKind["presence"]; p.Allowed || p.Rule != "residency.zones.eu.share.presence" {
		t.Fatalf("presence = %+v", p)
	}
	if ev := byKind["events"]; !ev.Allowed {
		t.Fatalf("events = %+v", ev)
	}
	if _, err := Explain(ctx, rules, store, "!nowhere:a1.example", "friend.example"); !errors.Is(err, ErrUnknownRoom) {
		t.Fatalf("unknown room: %v", err)
	}
	e, err = Explain(ctx, rules, store, "", "stranger.example")
	if err != nil || e.ServerZone != "" || len(e.Kinds) != len(Kinds) || e.Kinds[0].Allowed || e.Kinds[0].Rule != RuleUnlistedServer {
		t.Fatalf("server-level for a server in no zone: %+v, %v", e, err)
	}
}
