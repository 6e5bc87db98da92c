package slidingsync

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/myelin-chat/myelin/clientapi/syncv2"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

const defaultToDeviceLimit = 100

type toDeviceResult struct {
	NextBatch string            `json:"next_batch"`
	Events    []json.RawMessage `json:"events"`
}

func (r *toDeviceResult) hasData() bool { return len(r.Events) > 0 }

type e2eeResult struct {
	DeviceLists      *deviceLists   `json:"device_lists,omitempty"`
	OTKCounts        map[string]int `json:"device_one_time_keys_count"`
	FallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

type deviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

func (r *e2eeResult) hasData() bool { return r.DeviceLists != nil }

type accountDataResult struct {
	Global []json.RawMessage            `json:"global,omitempty"`
	Rooms  map[string][]json.RawMessage `json:"rooms,omitempty"`
}

func (r *accountDataResult) hasData() bool { return len(r.Global)+len(r.Rooms) > 0 }

type roomsEventResult struct {
	Rooms map[string]json.RawMessage `json:"rooms"`
}

func (r *roomsEventResult) hasData() bool { return len(r.Rooms) > 0 }

// extensions fills the enabled extensions. Room-scoped ones (account data,
// receipts, typing) cover the rooms the request's lists and subscriptions
// matched, narrowed by each extension's lists and rooms (listsOf: the lists
// whose windows hold each room).
func (b *builder) extensions(ctx context.Context, resp *response, matched map[string]*combined, listsOf map[string][]string) error {
	inScope := func(sc *roomScope) map[string]bool {
		rooms := map[string]bool{}
		for roomID := range matched {
			_, subscribed := b.subs[roomID]
			if sc.covers(roomID, listsOf[roomID], subscribed) {
				rooms[roomID] = true
			}
		}
		return rooms
	}
	ext := b.req.Extensions
	since := b.since()
	if td := ext.ToDevice; td != nil && td.on() && b.h.keys != nil {
		r, err := b.toDeviceExt(ctx, td.Since, td.Limit)
		if err != nil {
			return err
		}
		resp.Extensions["to_device"] = r
	}
	if ext.E2EE.on() && b.h.keys != nil {
		r := &e2eeResult{}
		if b.prevExists {
			changed, left, err := b.h.keys.DeviceListChanges(ctx, b.userID, since, b.to.Pos)
			if err != nil {
				return err
			}
			if len(changed)+len(left) > 0 {
				r.DeviceLists = &deviceLists{Changed: changed, Left: left}
			}
		}
		var err error
		if r.OTKCounts, err = b.h.keys.OneTimeKeyCounts(ctx, b.userID, b.deviceID); err != nil {
			return err
		}
		if r.OTKCounts == nil {
			r.OTKCounts = map[string]int{}
		}
		if r.FallbackKeyTypes, err = b.h.keys.UnusedFallbackKeyTypes(ctx, b.userID, b.deviceID); err != nil {
			return err
		}
		if r.FallbackKeyTypes == nil {
			r.FallbackKeyTypes = []string{}
		}
		resp.Extensions["e2ee"] = r
	}
	// Rooms sent in full in this answer get their room-scoped data in full.
	full := func(roomID string) bool {
		res := resp.Rooms[roomID]
		return !b.prevExists || (res != nil && res.Initial)
	}
	if ext.AccountData.on() {
		rooms := inScope(ext.AccountData)
		r := &accountDataResult{Rooms: map[string][]json.RawMessage{}}
		for _, a := range b.acct {
			ev, _ := json.Marshal(map[string]any{"type": a.Type, "content": a.Content})
			if a.RoomID == "" {
				if a.StreamPos > since {
					r.Global = append(r.Global, ev)
				}
			} else if rooms[a.RoomID] && (a.StreamPos > since || full(a.RoomID)) {
				r.Rooms[a.RoomID] = append(r.Rooms[a.RoomID], ev)
			}
		}
		if !b.prevExists || b.rulesPos > since {
			rules, _, err := b.h.push.PushRules(ctx, b.userID)
			if err != nil {
				return err
			}
			ev, _ := json.Marshal(map[string]any{"type": "m.push_rules", "content": map[string]any{"global": rules}})
			r.Global = append(r.Global, ev)
		}
		resp.Extensions["account_data"] = r
	}
	if ext.Receipts.on() {
		rooms := inScope(ext.Receipts)
		r := &roomsEventResult{Rooms: map[string]json.RawMessage{}}
		var inRange map[string][]storage.Receipt
		if b.prevExists {
			rs, err := b.h.store.ReceiptsInRange(ctx, b.userID, since, b.to.Pos)
			if err != nil {
				return err
			}
			inRange = map[string][]storage.Receipt{}
			for _, x := range rs {
				inRange[x.RoomID] = append(inRange[x.RoomID], x)
			}
		}
		for roomID := range rooms {
			if m := b.mems[roomID]; m == nil || m.At().Membership != "join" {
				continue
			}
			rs := inRange[roomID]
			if full(roomID) {
				var err error
				if rs, err = b.h.store.RoomReceipts(ctx, roomID, b.to.Pos); err != nil {
					return err
				}
			}
			if ev := syncv2.ReceiptEvent(b.userID, rs); ev != nil {
				r.Rooms[roomID] = ev
			}
		}
		resp.Extensions["receipts"] = r
	}
	if ext.Typing.on() {
		rooms := inScope(ext.Typing)
		r := &roomsEventResult{Rooms: map[string]json.RawMessage{}}
		for roomID := range rooms {
			if m := b.mems[roomID]; m == nil || m.At().Membership != "join" {
				continue
			}
			typingSince := b.prev.tok.Typing
			if full(roomID) {
				typingSince = 0
			}
			users, changed := b.h.ephemeral.TypingSince(roomID, typingSince)
			if !changed || (typingSince == 0 && len(users) == 0) {
				continue
			}
			if users == nil {
				users = []string{}
			}
			r.Rooms[roomID], _ = json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		}
		resp.Extensions["typing"] = r
	}
	return nil
}

// toDeviceExt delivers pending to-device messages after the client's since
// (which acknowledges, and deletes, everything up to it).
func (b *builder) toDeviceExt(ctx context.Context, sinceParam *string, limitParam *int) (*toDeviceResult, error) {
	after := int64(0)
	if sinceParam != nil && *sinceParam != "" {
		v, err := strconv.ParseInt(*sinceParam, 10, 64)
		if err != nil || v < 0 || v > b.to.Pos {
			return nil, mxhttp.InvalidParam("Invalid to_device since token %q", *sinceParam)
		}
		after = v
	}
	if after > b.next.toDevAck {
		if err := b.h.keys.DeleteToDeviceUpTo(ctx, b.userID, b.deviceID, after); err != nil {
			return nil, err
		}
		b.next.toDevAck = after
	}
	limit := defaultToDeviceLimit
	if limitParam != nil && *limitParam > 0 {
		limit = min(*limitParam, 1000)
	}
	msgs, err := b.h.keys.ToDeviceSince(ctx, b.userID, b.deviceID, after, limit)
	if err != nil {
		return nil, err
	}
	r := &toDeviceResult{Events: []json.RawMessage{}}
	for _, m := range msgs {
		if m.StreamPos > b.to.Pos {
			break
		}
		ev, _ := json.Marshal(m)
		r.Events = append(r.Events, ev)
		after = m.StreamPos
	}
	if len(msgs) < limit || len(r.Events) < len(msgs) {
		after = max(after, b.to.Pos) // everything up to the safe position was delivered
	}
	r.NextBatch = strconv.FormatInt(after, 10)
	return r, nil
}
