package stateres

import (
	"context"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// powerClosure is step 1's set X: the power events and the events of the full
// conflicted set in their auth chains, as Synapse builds it
// (_add_event_and_auth_chain_to_graph in synapse/state/v2.py): an auth chain
// is followed only through events of the full conflicted set.
//
// The spec says "enlarge X by adding the events in the auth chain of P which
// also belong to the full conflicted set", and the ordering uses "the DAG
// formed by auth events". Read literally, an event of the full conflicted set
// that P reaches only through events outside it belongs to X, and the order
// follows those outside paths. Synapse and gomatrixserverlib ignore such
// paths; servers must agree, so we match Synapse. (v2.1's conflicted state
// subgraph adds the events between conflicted events, which makes the two
// readings agree more often, but not always.)
func powerClosure(g *eventGraph, powerEvents []nodeID, fullConflicted map[nodeID]bool) ([]nodeID, map[nodeID]bool) {
	inX := make(map[nodeID]bool, len(powerEvents))
	x := make([]nodeID, 0, len(powerEvents))
	stack := slices.Clone(powerEvents)
	for _, n := range powerEvents {
		inX[n] = true
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		x = append(x, n)
		for _, a := range g.nodes[n].auth {
			if fullConflicted[a] && !inX[a] {
				inX[a] = true
				stack = append(stack, a)
			}
		}
	}
	return x, inX
}

// resolveV2 implements state resolution v2 (room versions 2–11) and v2.1
// (room version 12).
func resolveV2(ctx context.Context, version id.RoomVersion, stateSets []StateMap, provider EventProvider) (StateMap, error) {
	unconflicted, conflicted := Separate(stateSets)
	if len(conflicted) == 0 {
		return unconflicted, nil
	}
	if err := checkEventIDSupport(version); err != nil {
		return nil, err
	}
	v21 := version.StateResVersion() == id.StateResV2_1
	r := newResolver(ctx, version, provider)
	g := r.g

	authDiff, err := g.authDifference(ctx, stateSets, unconflicted, conflicted)
	if err != nil {
		return nil, fmt.Errorf("auth difference: %w", err)
	}

	// Full conflicted set: conflicted state ∪ auth difference (∪ conflicted
	// state subgraph in v2.1). Events the provider does not know cannot be
	// checked, so they take no part.
	var conflictedEvents []nodeID
	for _, ids := range conflicted {
		for _, evtID := range ids {
			conflictedEvents = append(conflictedEvents, g.intern(evtID))
		}
	}
	fullConflicted := make(map[nodeID]bool, len(conflictedEvents)+len(authDiff))
	addToFull := func(ns []nodeID) {
		for _, n := range ns {
			if g.nodes[n].state == loaded {
				fullConflicted[n] = true
			}
		}
	}
	if err = g.load(ctx, conflictedEvents); err != nil {
		return nil, err
	}
	addToFull(conflictedEvents)
	addToFull(authDiff)
	if v21 {
		subgraph, err := g.conflictedSubgraph(ctx, conflictedEvents)
		if err != nil {
			return nil, fmt.Errorf("conflicted state subgraph: %w", err)
		}
		addToFull(subgraph)
	}
	if err = r.loadCreateEvent(); err != nil {
		return nil, err
	}

	// Step 1: the power events and the parts of their auth chains inside the
	// full conflicted set, in reverse topological power order.
	var powerEvents []nodeID
	for n := range fullConflicted {
		if isPowerEvent(g.nodes[n].pdu) {
			powerEvents = append(powerEvents, n)
		}
	}
	slices.Sort(powerEvents) // keep the walk (and so provider batches) deterministic
	x, inX := powerClosure(g, powerEvents, fullConflicted)
	var xAuth []nodeID
	for _, n := range x {
		xAuth = append(xAuth, g.nodes[n].auth...)
	}
	if err = g.load(ctx, xAuth); err != nil { // for the senders' power levels
		return nil, err
	}
	sortedPower := r.reverseTopologicalPowerSort(x, inX)

	// Step 2: iterative auth checks from the unconflicted state (v2) or from
	// nothing (v2.1).
	base := unconflicted
	if v21 {
		base = StateMap{}
	}
	state := newStateView(base)
	if err = r.iterativeAuthChecks(sortedPower, state); err != nil {
		return nil, fmt.Errorf("resolving power events: %w", err)
	}

	// Step 3: everything else, in mainline order based on the partially
	// resolved power levels.
	var rest []nodeID
	for n := range fullConflicted {
		if !inX[n] {
			rest = append(rest, n)
		}
	}
	powerEvt := nodeID(-1)
	if plID, ok := state.get(pdu.StateKey{Type: event.StatePowerLevels.Type}); ok {
		powerEvt = g.intern(plID)
		if err = g.load(ctx, []nodeID{powerEvt}); err != nil {
			return nil, err
		}
		if g.nodes[powerEvt].state != loaded {
			powerEvt = -1
		}
	}
	// Step 4.
	if err = r.iterativeAuthChecks(r.mainlineSort(rest, powerEvt), state); err != nil {
		return nil, fmt.Errorf("resolving remaining events: %w", err)
	}

	// Step 5: the unconflicted state map always wins. (In v2 it was also the
	// base, so state.over already holds every other resolved entry.)
	resolved := make(StateMap, len(unconflicted)+len(state.over))
	for k, v := range state.over {
		resolved[k] = v
	}
	for k, v := range unconflicted {
		resolved[k] = v
	}
	return resolved, nil
}
