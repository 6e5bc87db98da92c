package roomserver

import (
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/stateres"
	"github.com/myelin-chat/myelin/storage"
)

// The store speaks storage.StateMap; roomserver/stateres keeps its own
// stateres.StateMap (mautrix keys, typed event IDs) so that it stays free of
// storage. These two are the one place the writer converts between them.

// toStateres converts a state read from the store for state resolution.
func toStateres(m storage.StateMap) stateres.StateMap {
	out := make(stateres.StateMap, len(m))
	for k, x := range m {
		out[pdu.StateKey(k)] = id.EventID(x)
	}
	return out
}

// fromStateres converts a resolved state for the store.
func fromStateres(m stateres.StateMap) storage.StateMap {
	out := make(storage.StateMap, len(m))
	for k, x := range m {
		out[storage.StateKey(k)] = string(x)
	}
	return out
}
