package keyserver

import (
	"context"
	"fmt"

	"github.com/myelin-chat/myelin/storage"
)

// A local user verifying a user of another server signs that user's master
// key with their user-signing key. The signature is the signer's business
// (spec: a user-signing key's signatures are visible only to its owner): it
// is verified against the master key the remote server gives, stored here
// beside those on local users' keys, merged into the signer's own
// /keys/query answers, and never sent to the remote server.

// remoteMasterKeys returns the master keys of remote users as signer's
// /keys/query sees them (the cache, or their servers); users whose server
// does not answer or who have none are absent.
func (s *Service) remoteMasterKeys(ctx context.Context, signer string, users []string) (map[string]map[string]storage.CrossSigningKey, error) {
	out := map[string]map[string]storage.CrossSigningKey{}
	if len(users) == 0 {
		return out, nil
	}
	req := &QueryRequest{DeviceKeys: map[string][]string{}}
	for _, u := range users {
		req.DeviceKeys[u] = nil
	}
	resp, err := s.Query(ctx, signer, req)
	if err != nil {
		return nil, fmt.Errorf("querying remote master keys: %w", err)
	}
	for u, raw := range resp.MasterKeys {
		if pub, err := parseCrossSigningKey(raw, u, "master"); err == nil {
			out[u] = map[string]storage.CrossSigningKey{"master": {PublicKey: pub, KeyJSON: raw}}
		}
	}
	return out, nil
}

// addOwnSignaturesOnRemote merges into resp the signatures requester made
// on the master keys of the remote users it holds.
func (s *Service) addOwnSignaturesOnRemote(ctx context.Context, requester string, resp *QueryResponse) error {
	var users []string
	for u := range resp.MasterKeys {
		if !s.isLocal(u) {
			users = append(users, u)
		}
	}
	if len(users) == 0 {
		return nil
	}
	sigs, err := s.store.SignaturesOn(ctx, users)
	if err != nil {
		return fmt.Errorf("reading signatures on remote keys: %w", err)
	}
	mine := map[string]map[string]map[string]map[string]string{} // target → key → signer → key ID → signature
	for _, sg := range sigs {
		if sg.SignerUserID != requester {
			continue
		}
		if mine[sg.TargetUserID] == nil {
			mine[sg.TargetUserID] = map[string]map[string]map[string]string{}
		}
		byKey := mine[sg.TargetUserID]
		if byKey[sg.TargetKeyID] == nil {
			byKey[sg.TargetKeyID] = map[string]map[string]string{requester: {}}
		}
		byKey[sg.TargetKeyID][requester][sg.SignerKeyID] = sg.Signature
	}
	for u, byKey := range mine {
		pub, err := parseCrossSigningKey(resp.MasterKeys[u], u, "master")
		if err != nil || byKey[pub] == nil {
			continue // signatures on a master key the user has since replaced
		}
		merged, err := mergeSignatures(resp.MasterKeys[u], byKey[pub], nil)
		if err != nil {
			return fmt.Errorf("merging signatures on %s's master key: %w", u, err)
		}
		resp.MasterKeys[u] = merged
	}
	return nil
}
