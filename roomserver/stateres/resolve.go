// Package stateres implements Matrix state resolution (spec v1.19): the
// original algorithm used by room version 1, state resolution v2 used by room
// versions 2–11, and v2.1 used by room version 12.
//
// Everything here is a pure function of its inputs; the only I/O goes through
// the EventProvider, which is called with one batch per step of each auth
// chain walk. Authorisation rules and PDU handling come from mautrix
// (federation/eventauth and federation/pdu).
package stateres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// StateMap is a room state: (type, state_key) → event ID.
type StateMap map[pdu.StateKey]id.EventID

// EventProvider gives access to events by ID. Returned PDUs have
// InternalMeta.EventID set and InternalMeta.Rejected when rejected.
type EventProvider interface {
	// Events returns the requested events; unknown IDs are simply absent.
	Events(ctx context.Context, ids []id.EventID) (map[id.EventID]*pdu.PDU, error)
}

// KeyProvider may optionally be implemented by an EventProvider. The auth
// rules need a signing key in one place: a restricted join's
// join_authorised_via_users_server must be signed by that user's server. Without a
// KeyProvider that check fails closed, so such joins cannot win a conflict.
type KeyProvider interface {
	GetKey(serverName string, keyID id.KeyID, minValidUntil time.Time) (key id.SigningKey, validUntil time.Time, err error)
}

// ErrNeedsInternalEventIDs is returned for room versions 1 and 2 when
// pdu.UseInternalMetaForGetEventID is false. mautrix cannot compute event IDs
// for those versions, and its auth rules call GetEventID on the create event
// for every join; without the flag every conflicted join would be wrongly
// rejected. The process owning the PDUs is expected to set the flag once at
// start-up (the provider contract already guarantees InternalMeta.EventID).
var ErrNeedsInternalEventIDs = errors.New("room versions 1 and 2 need pdu.UseInternalMetaForGetEventID = true")

// Resolve returns the resolved state of the given state sets for the room
// version. The result is a new map; the inputs are not modified.
//
// Rejected events (InternalMeta.Rejected) are never admitted into the resolved
// state from a conflict, nor used as auth events. The spec (v2, "Rejected
// events") says otherwise for some:
//
//	Events that have been rejected due to failing auth based on the state at
//	the event (rather than based on their auth chain) are handled as usual by
//	the algorithm, unless otherwise specified.
//
// so such an event held by another server's state set would be re-checked
// against the partially resolved state and could win (gomatrixserverlib does
// that). Synapse never admits a previously rejected event (a known deviation,
// synapse#13797), and we cannot tell the two kinds of rejection apart anyway.
// Servers must agree, so we match Synapse.
func Resolve(ctx context.Context, roomVersion id.RoomVersion, stateSets []StateMap, provider EventProvider) (StateMap, error) {
	if !roomVersion.IsKnown() {
		return nil, fmt.Errorf("stateres: %w %q", id.ErrUnknownRoomVersion, roomVersion)
	}
	switch len(stateSets) {
	case 0:
		return StateMap{}, nil
	case 1:
		return copyState(stateSets[0]), nil
	}
	var resolved StateMap
	var err error
	if roomVersion.StateResVersion() == id.StateResV1 {
		resolved, err = resolveV1(ctx, roomVersion, stateSets, provider)
	} else {
		resolved, err = resolveV2(ctx, roomVersion, stateSets, provider)
	}
	if err != nil {
		return nil, fmt.Errorf("stateres: resolving %d state sets of a v%s room: %w", len(stateSets), roomVersion, err)
	}
	return resolved, nil
}

// Separate splits state sets into the unconflicted state map and the
// conflicted state set, as defined by state resolution v2: a key is
// unconflicted only if every state set maps it to the same event. A key that
// is missing from some set is conflicted. Each conflicted list is sorted and
// free of duplicates.
func Separate(stateSets []StateMap) (unconflicted StateMap, conflicted map[pdu.StateKey][]id.EventID) {
	unconflicted = make(StateMap)
	conflicted = make(map[pdu.StateKey][]id.EventID)
	if len(stateSets) == 0 {
		return
	}
	for _, set := range stateSets {
		for key := range set {
			if _, done := unconflicted[key]; done {
				continue
			} else if _, done = conflicted[key]; done {
				continue
			}
			first, inAll := stateSets[0][key]
			var values []id.EventID
			for _, other := range stateSets {
				evtID, ok := other[key]
				if !ok {
					inAll = false
					continue
				}
				if evtID != first {
					inAll = false
				}
				if !slices.Contains(values, evtID) {
					values = append(values, evtID)
				}
			}
			if inAll {
				unconflicted[key] = first
			} else {
				slices.Sort(values)
				conflicted[key] = values
			}
		}
	}
	return
}

// AuthDifference returns the auth difference of the state sets (state
// resolution v2): the events that are in the auth chain of some but not all of
// the sets, where the auth chain of a set is the union of the auth chains of
// its events. The result is sorted.
func AuthDifference(ctx context.Context, stateSets []StateMap, provider EventProvider) ([]id.EventID, error) {
	unconflicted, conflicted := Separate(stateSets)
	g := newEventGraph(provider)
	diff, err := g.authDifference(ctx, stateSets, unconflicted, conflicted)
	if err != nil {
		return nil, fmt.Errorf("stateres: auth difference: %w", err)
	}
	out := make([]id.EventID, len(diff))
	for i, n := range diff {
		out[i] = g.nodes[n].id
	}
	slices.Sort(out)
	return out, nil
}

// checkEventIDSupport is called once auth checks are known to be needed.
func checkEventIDSupport(roomVersion id.RoomVersion) error {
	if roomVersion.EventIDFormat() == id.EventIDFormatCustom && !pdu.UseInternalMetaForGetEventID {
		return ErrNeedsInternalEventIDs
	}
	return nil
}

func copyState(s StateMap) StateMap {
	out := make(StateMap, len(s))
	for k, v := range s {
		out[k] = v
	}
	return out
}

// compareEventIDs orders event IDs by their bytes, which is how every
// implementation breaks the final tie.
func compareEventIDs(a, b id.EventID) int {
	return strings.Compare(string(a), string(b))
}
