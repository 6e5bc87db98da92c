package stateres

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha1"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// separateV1 splits state sets the way the original algorithm does: a key
// conflicts only when two sets map it to different events, so a key missing
// from some sets is still unconflicted.
func separateV1(stateSets []StateMap) (unconflicted StateMap, conflicted map[pdu.StateKey][]id.EventID) {
	unconflicted = make(StateMap)
	conflicted = make(map[pdu.StateKey][]id.EventID)
	for _, set := range stateSets {
		for key, evtID := range set {
			if values, ok := conflicted[key]; ok {
				if !slices.Contains(values, evtID) {
					conflicted[key] = append(values, evtID)
				}
			} else if prev, ok := unconflicted[key]; !ok {
				unconflicted[key] = evtID
			} else if prev != evtID {
				conflicted[key] = []id.EventID{prev, evtID}
				delete(unconflicted, key)
			}
		}
	}
	return
}

// resolveV1 implements the original state resolution algorithm (room v1).
func resolveV1(ctx context.Context, version id.RoomVersion, stateSets []StateMap, provider EventProvider) (StateMap, error) {
	unconflicted, conflicted := separateV1(stateSets)
	if len(conflicted) == 0 {
		return unconflicted, nil
	}
	if err := checkEventIDSupport(version); err != nil {
		return nil, err
	}
	r := newResolver(ctx, version, provider)
	g := r.g

	var all []nodeID
	for _, ids := range conflicted {
		all = append(all, g.internAll(ids)...)
	}
	if err := g.load(ctx, all); err != nil {
		return nil, err
	}
	// Candidates per key, by ascending depth then descending sha1(event_id).
	// Unknown and rejected events cannot win.
	candidates := make(map[pdu.StateKey][]nodeID, len(conflicted))
	neededKeys := make(map[pdu.StateKey]bool)
	for key, ids := range conflicted {
		type ranked struct {
			n     nodeID
			depth int64
			hash  [sha1.Size]byte
		}
		var list []ranked
		for _, evtID := range ids {
			n := g.index[evtID]
			evt := g.nodes[n].pdu
			if evt == nil || evt.InternalMeta.Rejected {
				continue
			}
			list = append(list, ranked{n: n, depth: evt.Depth, hash: sha1.Sum([]byte(evtID))})
			for _, k := range evt.AuthEventSelection(version) {
				neededKeys[k] = true
			}
		}
		slices.SortFunc(list, func(a, b ranked) int {
			if a.depth != b.depth {
				return cmp.Compare(a.depth, b.depth)
			}
			return bytes.Compare(b.hash[:], a.hash[:])
		})
		for _, c := range list {
			candidates[key] = append(candidates[key], c.n)
		}
	}
	// Fetch the unconflicted events the auth checks will consult in one go.
	var needed []nodeID
	for key := range neededKeys {
		if evtID, ok := unconflicted[key]; ok {
			needed = append(needed, g.intern(evtID))
		}
	}
	if err := g.load(ctx, needed); err != nil {
		return nil, err
	}

	state := newStateView(unconflicted)
	// resolveAuthKey adds the first candidate, then each following one while
	// it is allowed by the state so far.
	resolveAuthKey := func(key pdu.StateKey, view *stateView) error {
		list := candidates[key]
		if len(list) == 0 {
			return nil
		}
		view.set(key, g.nodes[list[0]].id)
		for _, n := range list[1:] {
			ok, err := r.allowed(n, view)
			if err != nil {
				return fmt.Errorf("auth check of %s: %w", g.nodes[n].id, err)
			} else if !ok {
				break
			}
			view.set(key, g.nodes[n].id)
		}
		return nil
	}
	plKey := pdu.StateKey{Type: event.StatePowerLevels.Type}
	jrKey := pdu.StateKey{Type: event.StateJoinRules.Type}
	for _, key := range []pdu.StateKey{plKey, jrKey} {
		if err := resolveAuthKey(key, state); err != nil {
			return nil, err
		}
	}
	// Each member key is resolved on its own against the same state, so the
	// result does not depend on the order of the keys.
	var memberKeys, otherKeys []pdu.StateKey
	for key := range candidates {
		switch {
		case key == plKey || key == jrKey:
		case key.Type == event.StateMember.Type:
			memberKeys = append(memberKeys, key)
		default:
			otherKeys = append(otherKeys, key)
		}
	}
	memberWinners := make(StateMap, len(memberKeys))
	for _, key := range memberKeys {
		view := state.fork()
		if err := resolveAuthKey(key, view); err != nil {
			return nil, err
		}
		if evtID, ok := view.over[key]; ok {
			memberWinners[key] = evtID
		}
	}
	for key, evtID := range memberWinners {
		state.set(key, evtID)
	}
	// Other events do not affect authorisation: the deepest candidate (lowest
	// sha1 on ties) that passes auth against the state so far wins.
	otherWinners := make(StateMap, len(otherKeys))
	for _, key := range otherKeys {
		list := candidates[key]
		for i := len(list) - 1; i >= 0; i-- {
			ok, err := r.allowed(list[i], state)
			if err != nil {
				return nil, fmt.Errorf("auth check of %s: %w", g.nodes[list[i]].id, err)
			} else if ok {
				otherWinners[key] = g.nodes[list[i]].id
				break
			}
		}
	}

	resolved := copyState(unconflicted)
	for k, v := range state.over {
		resolved[k] = v
	}
	for k, v := range otherWinners {
		resolved[k] = v
	}
	return resolved, nil
}
