package stateres

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// nodeID indexes eventGraph.nodes. Interning event IDs once keeps the graph
// walks to slice indexing instead of string hashing.
type nodeID = int32

type loadState uint8

const (
	notLoaded loadState = iota
	loaded
	missing // the provider does not know the event
)

type eventNode struct {
	id    id.EventID
	pdu   *pdu.PDU
	auth  []nodeID // the event's auth_events, set once loaded
	state loadState

	// Per-walk marks, compared against eventGraph.walkGen so that no walk
	// needs to clear them.
	reachedGen, expandedGen uint32

	inUnconflictedChain bool  // an unconflicted event or in the auth chain of one
	setCount            int32 // number of state sets whose auth chain reaches this node (outside the above)
}

// eventGraph is the per-call cache of events and their auth edges. It is
// filled lazily from the provider, one batch per walk level.
type eventGraph struct {
	provider EventProvider
	index    map[id.EventID]nodeID
	nodes    []eventNode
	walkGen  uint32
}

func newEventGraph(provider EventProvider) *eventGraph {
	return &eventGraph{provider: provider, index: make(map[id.EventID]nodeID)}
}

func (g *eventGraph) intern(evtID id.EventID) nodeID {
	if n, ok := g.index[evtID]; ok {
		return n
	}
	n := nodeID(len(g.nodes))
	g.nodes = append(g.nodes, eventNode{id: evtID})
	g.index[evtID] = n
	return n
}

func (g *eventGraph) internAll(ids []id.EventID) []nodeID {
	out := make([]nodeID, len(ids))
	for i, evtID := range ids {
		out[i] = g.intern(evtID)
	}
	return out
}

// load fetches every not yet loaded node in one provider call.
func (g *eventGraph) load(ctx context.Context, ns []nodeID) error {
	var want []id.EventID
	for _, n := range ns {
		if g.nodes[n].state == notLoaded {
			want = append(want, g.nodes[n].id)
		}
	}
	if len(want) == 0 {
		return nil
	}
	got, err := g.provider.Events(ctx, want)
	if err != nil {
		return fmt.Errorf("fetching %d events: %w", len(want), err)
	}
	for _, evtID := range want {
		n := g.index[evtID]
		evt := got[evtID]
		if evt == nil {
			g.nodes[n].state = missing
			continue
		}
		// Interning may grow g.nodes, so build the edge list before storing.
		auth := make([]nodeID, len(evt.AuthEvents))
		for i, authID := range evt.AuthEvents {
			auth[i] = g.intern(authID)
		}
		node := &g.nodes[n]
		node.pdu, node.auth, node.state = evt, auth, loaded
	}
	return nil
}

// event returns the PDU for an event ID, loading it if needed; nil if unknown.
func (g *eventGraph) event(ctx context.Context, evtID id.EventID) (*pdu.PDU, error) {
	n := g.intern(evtID)
	if err := g.load(ctx, []nodeID{n}); err != nil {
		return nil, err
	}
	return g.nodes[n].pdu, nil
}

// walkAuthChains returns the union of the auth chains of starts: every node
// reachable through one or more auth_events edges. Nodes for which skip
// returns true are neither returned nor walked through. Each BFS level is
// loaded with one provider call.
func (g *eventGraph) walkAuthChains(ctx context.Context, starts []nodeID, skip func(nodeID) bool) ([]nodeID, error) {
	g.walkGen++
	gen := g.walkGen
	frontier := make([]nodeID, 0, len(starts))
	for _, n := range starts {
		if g.nodes[n].expandedGen != gen {
			g.nodes[n].expandedGen = gen
			frontier = append(frontier, n)
		}
	}
	var reached []nodeID
	for len(frontier) > 0 {
		if err := g.load(ctx, frontier); err != nil {
			return nil, err
		}
		var next []nodeID
		for _, n := range frontier {
			for _, a := range g.nodes[n].auth {
				node := &g.nodes[a]
				if node.reachedGen == gen || (skip != nil && skip(a)) {
					continue
				}
				node.reachedGen = gen
				reached = append(reached, a)
				if node.expandedGen != gen {
					node.expandedGen = gen
					next = append(next, a)
				}
			}
		}
		frontier = next
	}
	return reached, nil
}

// authDifference computes ∪Cᵢ − ∩Cᵢ where Cᵢ is the full auth chain of
// state set i. The spec defines it as "the union of the auth chains for each
// event in Sᵢ", which read literally leaves out Sᵢ's own events; Synapse
// counts them (its auth chain difference starts every state set from its
// own events: event_federation.py, _get_auth_chain_difference_txn), and so
// does gomatrixserverlib. The readings differ for an unconflicted event that
// some sets' events cite and others' do not: literally it is in the
// difference and replayed, for Synapse it is in every Cᵢ. Servers must
// agree, so we match Synapse: Cᵢ includes Sᵢ's events.
//
// Every Cᵢ contains U, the unconflicted events and their auth chains, so the
// difference is (∪Dᵢ − ∩Dᵢ) − U with Dᵢ set i's conflicted events and their
// auth chains. A node outside U cannot be reached through a node inside U
// (its ancestors are all in U), so the Dᵢ walks stop at U: U is walked once,
// however many state sets share it, and the per-set walks stay small.
func (g *eventGraph) authDifference(ctx context.Context, stateSets []StateMap, unconflicted StateMap, conflicted map[pdu.StateKey][]id.EventID) ([]nodeID, error) {
	starts := make([]nodeID, 0, len(unconflicted))
	for _, evtID := range unconflicted {
		starts = append(starts, g.intern(evtID))
	}
	inU, err := g.walkAuthChains(ctx, starts, nil)
	if err != nil {
		return nil, fmt.Errorf("walking auth chain of unconflicted state: %w", err)
	}
	for _, n := range append(inU, starts...) {
		g.nodes[n].inUnconflictedChain = true
	}
	inUnconflictedChain := func(n nodeID) bool { return g.nodes[n].inUnconflictedChain }

	var touched []nodeID
	for i, set := range stateSets {
		starts = starts[:0]
		for key := range conflicted {
			if evtID, ok := set[key]; ok {
				starts = append(starts, g.intern(evtID))
			}
		}
		reached, err := g.walkAuthChains(ctx, starts, inUnconflictedChain)
		if err != nil {
			return nil, fmt.Errorf("walking auth chain of state set %d: %w", i, err)
		}
		// The set's own conflicted events, unless another one cites them.
		for _, n := range starts {
			if node := &g.nodes[n]; node.reachedGen != g.walkGen && !node.inUnconflictedChain {
				node.reachedGen = g.walkGen
				reached = append(reached, n)
			}
		}
		for _, n := range reached {
			if g.nodes[n].setCount == 0 {
				touched = append(touched, n)
			}
			g.nodes[n].setCount++
		}
	}
	var diff []nodeID
	for _, n := range touched {
		if int(g.nodes[n].setCount) < len(stateSets) {
			diff = append(diff, n)
		}
	}
	return diff, nil
}

// conflictedSubgraph returns the events on auth_events paths between two
// events of the conflicted state set (state resolution v2.1): the ancestors
// of conflicted events that are themselves descendants of a conflicted
// event. The conflicted events themselves are not returned.
func (g *eventGraph) conflictedSubgraph(ctx context.Context, conflictedEvents []nodeID) ([]nodeID, error) {
	ancestors, err := g.walkAuthChains(ctx, conflictedEvents, nil)
	if err != nil {
		return nil, fmt.Errorf("walking auth chains of conflicted events: %w", err)
	}
	// Walk backwards from the conflicted events over the reversed edges of the
	// ancestor subgraph: everything reached has a conflicted event in its
	// auth chain.
	isAncestor := make(map[nodeID]bool, len(ancestors))
	for _, n := range ancestors {
		isAncestor[n] = true
	}
	citedBy := make(map[nodeID][]nodeID)
	addEdges := func(n nodeID) {
		for _, a := range g.nodes[n].auth {
			if isAncestor[a] {
				citedBy[a] = append(citedBy[a], n)
			}
		}
	}
	for _, n := range ancestors {
		addEdges(n)
	}
	for _, n := range conflictedEvents {
		if !isAncestor[n] {
			addEdges(n)
		}
	}
	seen := make(map[nodeID]bool, len(conflictedEvents))
	for _, n := range conflictedEvents {
		seen[n] = true
	}
	var subgraph []nodeID
	queue := append([]nodeID(nil), conflictedEvents...)
	for len(queue) > 0 {
		n := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		for _, desc := range citedBy[n] {
			if !seen[desc] {
				seen[desc] = true
				subgraph = append(subgraph, desc)
				queue = append(queue, desc)
			}
		}
	}
	return subgraph, nil
}
