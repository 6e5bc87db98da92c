package keyserver

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
)

// claimPaddingFederation answers /user/keys/claim with more than was asked:
// a key for a device not named, several keys for the device named, and a
// key for a user of its own server nobody asked about.
type claimPaddingFederation struct{ Federation }

func (claimPaddingFederation) ClaimKeys(_ context.Context, server string, q map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]map[string]json.RawMessage{}
	for u, devs := range q {
		out[u] = map[string]map[string]json.RawMessage{}
		for d, alg := range devs {
			keys := map[string]json.RawMessage{}
			for i := range 50 {
				keys[fmt.Sprintf("%s:K%d", alg, i)] = json.RawMessage(`{"key":"k"}`)
			}
			out[u][d] = keys
		}
		out[u]["UNASKED"] = map[string]json.RawMessage{"signed_curve25519:K": json.RawMessage(`{"key":"k"}`)}
	}
	out["@extra:pad.example"] = map[string]map[string]json.RawMessage{"X": {"signed_curve25519:K": json.RawMessage(`{"key":"k"}`)}}
	return out, nil
}

// A remote server's /user/keys/claim answer is kept only for what was
// asked: one key per device named, of the algorithm named.
func TestAttackRemoteClaimAnswerBounded(t *testing.T) {
	s := New(Options{ServerName: "local.example", Federation: claimPaddingFederation{}})
	resp, err := s.Claim(context.Background(), &ClaimRequest{OneTimeKeys: map[string]map[string]string{
		"@a:pad.example": {"DEV": "signed_curve25519"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.OneTimeKeys["@extra:pad.example"]; ok {
		t.Error("a claimed key of a user nobody asked about reached the client")
	}
	if _, ok := resp.OneTimeKeys["@a:pad.example"]["UNASKED"]; ok {
		t.Error("a claimed key of a device not named reached the client")
	}
	if n := len(resp.OneTimeKeys["@a:pad.example"]["DEV"]); n != 1 {
		t.Errorf("%d keys for one claimed device reached the client, want 1", n)
	}
}
