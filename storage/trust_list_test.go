package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestTrustListStore: the last accepted trust list per issuer is kept, a
// newer version replaces it, an older one is not written; the policy state
// is one row, replaced.
func TestTrustListStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		_, err := db.GetTrustList(ctx, "consortium.example")
		wantNotFound(t, "no list yet", err)
		must(t, db.PutTrustList(ctx, storage.StoredTrustList{Issuer: "consortium.example", Version: 2, Document: []byte(`{"v":2}`), AcceptedTS: 10}))
		must(t, db.PutTrustList(ctx, storage.StoredTrustList{Issuer: "consortium.example", Version: 3, Document: []byte(`{"v":3}`), AcceptedTS: 20}))
		if err := db.PutTrustList(ctx, storage.StoredTrustList{Issuer: "consortium.example", Version: 1, Document: []byte(`{"v":1}`), AcceptedTS: 30}); !errors.Is(err, storage.ErrTrustListNewer) {
			t.Fatalf("older version: got %v, want ErrTrustListNewer", err)
		}
		got, err := db.GetTrustList(ctx, "consortium.example")
		must(t, err)
		if got.Version != 3 || string(got.Document) != `{"v":3}` || got.AcceptedTS != 20 {
			t.Fatalf("stored list = %+v", got)
		}
		_, err = db.GetTrustList(ctx, "other.example")
		wantNotFound(t, "another issuer", err)

		_, err = db.GetPolicyState(ctx)
		wantNotFound(t, "no policy state yet", err)
		must(t, db.PutPolicyState(ctx, storage.PolicyState{Fingerprint: "aa", Summary: []byte(`{}`), RecordedTS: 1}))
		must(t, db.PutPolicyState(ctx, storage.PolicyState{Fingerprint: "bb", Summary: []byte(`{"zones":["a"]}`), RecordedTS: 2}))
		ps, err := db.GetPolicyState(ctx)
		must(t, err)
		if ps.Fingerprint != "bb" || string(ps.Summary) != `{"zones":["a"]}` || ps.RecordedTS != 2 {
			t.Fatalf("policy state = %+v", ps)
		}
	})
}
