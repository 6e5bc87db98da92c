package accounts

import (
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// The one filter validator: POST /user/{userId}/filter, /sync's inline
// filter=<json>, and the RoomEventFilter of /messages and /context all apply
// it. Wrong JSON types are M_BAD_JSON (as mxhttp.DecodeJSON reports them),
// bad values M_INVALID_PARAM.

// maxFilterIDs bounds each list of room IDs, user IDs or event types: the
// lists are matched against every event a /sync reads.
const maxFilterIDs = 1000

// ParseFilter validates a filter definition and returns it parsed.
func ParseFilter(raw []byte) (*mautrix.Filter, error) {
	var f mautrix.Filter
	if err := mxhttp.DecodeJSON(raw, &f); err != nil {
		return nil, err
	}
	if err := requireObject(raw); err != nil {
		return nil, err
	}
	if f.EventFormat != "" && f.EventFormat != mautrix.EventFormatClient && f.EventFormat != mautrix.EventFormatFederation {
		return nil, mxhttp.BadJSON("event_format must be \"client\" or \"federation\"")
	}
	parts := map[string]*mautrix.FilterPart{"account_data": f.AccountData, "presence": f.Presence}
	if r := f.Room; r != nil {
		if err := checkRoomIDs("room.rooms", r.Rooms); err != nil {
			return nil, err
		}
		if err := checkRoomIDs("room.not_rooms", r.NotRooms); err != nil {
			return nil, err
		}
		parts["room.account_data"], parts["room.ephemeral"] = r.AccountData, r.Ephemeral
		parts["room.state"], parts["room.timeline"] = r.State, r.Timeline
	}
	for name, p := range parts {
		if err := checkFilterPart(name, p); err != nil {
			return nil, err
		}
	}
	return &f, nil
}

// ParseEventFilter validates a RoomEventFilter (the filter parameter of
// /messages and /context) and returns it parsed; "" is no filter.
func ParseEventFilter(raw string) (*mautrix.FilterPart, error) {
	if raw == "" {
		return nil, nil
	}
	// A query parameter that is not a JSON object (a filter ID, "{") is
	// M_BAD_JSON, as it always was here; M_NOT_JSON is for request bodies.
	if err := requireObject([]byte(raw)); err != nil {
		return nil, err
	}
	var p mautrix.FilterPart
	if err := mxhttp.DecodeJSON([]byte(raw), &p); err != nil {
		return nil, err
	}
	if err := checkFilterPart("filter", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func requireObject(raw []byte) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return mxhttp.BadJSON("A filter must be a JSON object")
	}
	return nil
}

func checkFilterPart(name string, p *mautrix.FilterPart) error {
	if p == nil {
		return nil
	}
	if p.Limit < 0 {
		return mxhttp.BadJSON("%s.limit must not be negative", name)
	}
	if err := checkRoomIDs(name+".rooms", p.Rooms); err != nil {
		return err
	}
	if err := checkRoomIDs(name+".not_rooms", p.NotRooms); err != nil {
		return err
	}
	if err := checkUserIDs(name+".senders", p.Senders); err != nil {
		return err
	}
	if err := checkUserIDs(name+".not_senders", p.NotSenders); err != nil {
		return err
	}
	if len(p.Types) > maxFilterIDs || len(p.NotTypes) > maxFilterIDs {
		return mxhttp.InvalidParam("%s: at most %d event types per list", name, maxFilterIDs)
	}
	return nil
}

// checkRoomIDs accepts room IDs of every room version: "!" then an opaque
// part (":server" is absent from room v12 IDs), at most 255 bytes.
func checkRoomIDs(name string, ids []id.RoomID) error {
	if len(ids) > maxFilterIDs {
		return mxhttp.InvalidParam("%s: at most %d room IDs", name, maxFilterIDs)
	}
	for _, r := range ids {
		if len(r) < 2 || len(r) > 255 || r[0] != '!' || strings.ContainsAny(string(r), " \x00") {
			return mxhttp.InvalidParam("%s: %q is not a room ID", name, r)
		}
	}
	return nil
}

// checkUserIDs accepts user IDs, historical localparts included.
func checkUserIDs(name string, ids []id.UserID) error {
	if len(ids) > maxFilterIDs {
		return mxhttp.InvalidParam("%s: at most %d user IDs", name, maxFilterIDs)
	}
	for _, u := range ids {
		if _, _, err := u.Parse(); err != nil || len(u) > 255 {
			return mxhttp.InvalidParam("%s: %q is not a user ID", name, u)
		}
	}
	return nil
}
