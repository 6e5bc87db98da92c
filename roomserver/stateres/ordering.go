package stateres

import (
	"cmp"
	"container/heap"
	"slices"

	"maunium.net/go/mautrix/event"
)

// powerSortKey is the comparison relation of the reverse topological power
// ordering: higher sender power first, then older origin_server_ts, then
// smaller event ID.
type powerSortKey struct {
	n     nodeID
	power int64
	ts    int64
}

func (r *resolver) comparePowerKeys(a, b powerSortKey) int {
	if a.power != b.power {
		return cmp.Compare(b.power, a.power)
	}
	if a.ts != b.ts {
		return cmp.Compare(a.ts, b.ts)
	}
	return compareEventIDs(r.g.nodes[a.n].id, r.g.nodes[b.n].id)
}

type powerHeap struct {
	r     *resolver
	items []powerSortKey
}

func (h *powerHeap) Len() int           { return len(h.items) }
func (h *powerHeap) Less(i, j int) bool { return h.r.comparePowerKeys(h.items[i], h.items[j]) < 0 }
func (h *powerHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *powerHeap) Push(x any)         { h.items = append(h.items, x.(powerSortKey)) }
func (h *powerHeap) Pop() any {
	last := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return last
}

// reverseTopologicalPowerSort orders events from earliest to latest: Kahn's
// algorithm over the auth DAG restricted to the given events (inSet), picking
// the smallest candidate by powerSortKey at every step. Only auth_events
// edges between two events of the set count, as in Synapse (see
// powerClosure); an event caught in a cycle of bad data is left out.
func (r *resolver) reverseTopologicalPowerSort(events []nodeID, inSet map[nodeID]bool) []nodeID {
	parentsOf := func(n nodeID) []nodeID {
		var f []nodeID
		for _, a := range r.g.nodes[n].auth {
			if inSet[a] && a != n {
				f = append(f, a)
			}
		}
		slices.Sort(f)
		return slices.Compact(f)
	}

	outDegree := make(map[nodeID]int, len(events))
	children := make(map[nodeID][]nodeID, len(events))
	h := &powerHeap{r: r}
	for _, n := range events {
		parents := parentsOf(n)
		outDegree[n] = len(parents)
		for _, p := range parents {
			children[p] = append(children[p], n)
		}
		if len(parents) == 0 {
			h.items = append(h.items, r.powerKey(n))
		}
	}
	heap.Init(h)
	sorted := make([]nodeID, 0, len(events))
	for h.Len() > 0 {
		n := heap.Pop(h).(powerSortKey).n
		sorted = append(sorted, n)
		for _, c := range children[n] {
			outDegree[c]--
			if outDegree[c] == 0 {
				heap.Push(h, r.powerKey(c))
			}
		}
	}
	return sorted
}

func (r *resolver) powerKey(n nodeID) powerSortKey {
	return powerSortKey{n: n, power: r.senderPower(n), ts: r.g.nodes[n].pdu.OriginServerTS}
}

// senderPower is the power level of an event's sender according to the event's
// own auth events.
func (r *resolver) senderPower(n nodeID) int64 {
	node := &r.g.nodes[n]
	sender := node.pdu.Sender
	if r.version.PrivilegedRoomCreators() && r.create != nil && isCreator(r.create, sender) {
		return infinitePower
	}
	pl := r.authEventOfType(n, event.StatePowerLevels.Type)
	if pl < 0 {
		// No power levels yet: only the creator has power (100).
		if create := r.authEventOfType(n, event.StateCreate.Type); create >= 0 && !r.version.PrivilegedRoomCreators() {
			if legacyCreator(r.version, r.g.nodes[create].pdu) == sender {
				return 100
			}
		}
		return 0
	}
	return r.powerLevels(pl).level(sender)
}

// authEventOfType returns the first loaded auth event of n with the given type
// and an empty state key, or -1.
func (r *resolver) authEventOfType(n nodeID, evtType string) nodeID {
	for _, a := range r.g.nodes[n].auth {
		if isStateKey(r.g.nodes[a].pdu, evtType, "") {
			return a
		}
	}
	return -1
}

func (r *resolver) powerLevels(n nodeID) *powerLevels {
	pl, ok := r.plCache[n]
	if !ok {
		pl = parsePowerLevels(r.g.nodes[n].pdu.Content)
		r.plCache[n] = pl
	}
	return pl
}

// mainlineSort orders events by the mainline ordering based on the power
// levels event powerEvt (-1 if the state has none): events whose power levels
// chain meets the mainline earlier (further from powerEvt) come first, then
// older origin_server_ts, then smaller event ID.
func (r *resolver) mainlineSort(events []nodeID, powerEvt nodeID) []nodeID {
	const unreachable = int(^uint(0) >> 1) // the spec's ∞
	// position of each event on the mainline, 0 being powerEvt itself.
	position := make(map[nodeID]int)
	for i, p := 0, powerEvt; p >= 0; i++ {
		if _, loop := position[p]; loop {
			break // guards against cyclic bad data
		}
		position[p] = i
		p = r.authEventOfType(p, event.StatePowerLevels.Type)
	}
	// depthOf memoises, for power levels events off the mainline, the position
	// where their own chain of power levels meets it.
	var depthOf func(p nodeID) int
	depthOf = func(p nodeID) int {
		if p < 0 {
			return unreachable
		}
		if pos, ok := position[p]; ok {
			return pos
		}
		position[p] = unreachable // guards against cyclic bad data
		pos := depthOf(r.authEventOfType(p, event.StatePowerLevels.Type))
		position[p] = pos
		return pos
	}
	type mainlineKey struct {
		n   nodeID
		pos int
		ts  int64
	}
	keys := make([]mainlineKey, len(events))
	for i, n := range events {
		// The event itself is not part of its list [e₁, …, eₘ]: start from
		// the power levels event it cites.
		keys[i] = mainlineKey{n: n, pos: depthOf(r.authEventOfType(n, event.StatePowerLevels.Type)), ts: r.g.nodes[n].pdu.OriginServerTS}
	}
	slices.SortFunc(keys, func(a, b mainlineKey) int {
		if a.pos != b.pos {
			return cmp.Compare(b.pos, a.pos)
		}
		if a.ts != b.ts {
			return cmp.Compare(a.ts, b.ts)
		}
		return compareEventIDs(r.g.nodes[a.n].id, r.g.nodes[b.n].id)
	})
	sorted := make([]nodeID, len(keys))
	for i, k := range keys {
		sorted[i] = k.n
	}
	return sorted
}
