package keyserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// ToDeviceEvent is a to-device message as /sync delivers it.
type ToDeviceEvent struct {
	StreamPos int64           `json:"-"`
	Sender    string          `json:"sender"`
	Type      string          `json:"type"`
	Content   json.RawMessage `json:"content"`
}

// SendToDevice handles PUT /sendToDevice/{eventType}/{txnId}: messages maps
// user → device ID (or "*": all their devices) → content. A txnId already
// used by the sending device is answered with success and changes nothing.
//
// Messages to local devices are stored for /sync. Messages to remote users go
// to the federation module; without one the request is refused before
// anything is stored (the server does not pretend to deliver what it cannot).
func (s *Service) SendToDevice(ctx context.Context, sender, senderDevice, eventType, txnID string,
	messages map[string]map[string]json.RawMessage) error {
	if eventType == "" || txnID == "" {
		return mxhttp.MissingParam("eventType and txnId are required")
	}
	users := make([]string, 0, len(messages))
	for u := range messages {
		users = append(users, u)
	}
	local, remote, err := s.splitUsers(users)
	if err != nil {
		return err
	}
	if len(remote) > 0 && s.fed == nil {
		return mxhttp.Forbidden("Cannot send to-device messages to remote users: federation is not enabled on this server")
	}
	isLocal := make(map[string]bool, len(local))
	for _, u := range local {
		isLocal[u] = true
	}
	var msgs []storage.ToDeviceMessage
	for _, u := range users {
		for dev, content := range messages[u] {
			if len(content) > MaxToDeviceContentBytes {
				return mxhttp.TooLarge("To-device message content exceeds %d bytes", MaxToDeviceContentBytes)
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(content, &obj); err != nil || obj == nil {
				return mxhttp.BadJSON("Content for %s/%s must be a JSON object", u, dev)
			}
			if dev == "" {
				return mxhttp.InvalidParam("Empty device ID for %s", u)
			}
			if isLocal[u] { // a set: users × local would be quadratic
				msgs = append(msgs, storage.ToDeviceMessage{UserID: u, DeviceID: dev, Sender: sender, Type: eventType, Content: content})
			}
		}
	}
	sort.Slice(msgs, func(i, j int) bool {
		if msgs[i].UserID != msgs[j].UserID {
			return msgs[i].UserID < msgs[j].UserID
		}
		return msgs[i].DeviceID < msgs[j].DeviceID
	})
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	delivered, dup, err := s.store.SendToDevice(ctx, sender, senderDevice, txnID, msgs, pos, s.now().UnixMilli(), s.MaxPendingToDevice)
	finish()
	if err != nil {
		return fmt.Errorf("storing to-device messages: %w", err)
	}
	if dup {
		return nil
	}
	s.notifier.Notify(pos, delivered...)
	for server, us := range remote {
		out := map[string]map[string]json.RawMessage{}
		for _, u := range us {
			out[u] = messages[u]
		}
		// The federation queue persists and retries; the message ID makes the
		// EDU idempotent on the receiving side.
		if err := s.fed.SendToDevice(context.WithoutCancel(ctx), server, sender, eventType,
			senderDevice+"/"+txnID, out); err != nil {
			return fmt.Errorf("queueing to-device EDU to %s: %w", server, err)
		}
	}
	return nil
}

// ReceiveToDevice stores an inbound m.direct_to_device EDU from origin for
// local users; messageID makes it idempotent.
func (s *Service) ReceiveToDevice(ctx context.Context, origin, sender, eventType, messageID string,
	messages map[string]map[string]json.RawMessage) error {
	if _, server, err := id.UserID(sender).Parse(); err != nil || server != origin {
		return mxhttp.Forbidden("Sender %s does not belong to %s", sender, origin)
	}
	var msgs []storage.ToDeviceMessage
	for u, devs := range messages {
		if !s.isLocal(u) {
			continue
		}
		for dev, content := range devs {
			msgs = append(msgs, storage.ToDeviceMessage{UserID: u, DeviceID: dev, Sender: sender, Type: eventType, Content: content})
		}
	}
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	// Remote senders are keyed by server: their message IDs are unique per origin.
	delivered, dup, err := s.store.SendToDevice(ctx, "", origin, messageID, msgs, pos, s.now().UnixMilli(), s.MaxPendingToDevice)
	finish()
	if err != nil {
		return err
	}
	if !dup {
		s.notifier.Notify(pos, delivered...)
	}
	return nil
}

// ToDeviceSince returns up to limit pending messages for a device after
// stream position after (for /sync).
func (s *Service) ToDeviceSince(ctx context.Context, userID, deviceID string, after int64, limit int) ([]ToDeviceEvent, error) {
	msgs, err := s.store.ToDeviceSince(ctx, userID, deviceID, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]ToDeviceEvent, len(msgs))
	for i, m := range msgs {
		out[i] = ToDeviceEvent{StreamPos: m.StreamPos, Sender: m.Sender, Type: m.Type, Content: m.Content}
	}
	return out, nil
}

// DeleteToDeviceUpTo deletes messages a device has acknowledged (its /sync
// came back with a token at or past pos).
func (s *Service) DeleteToDeviceUpTo(ctx context.Context, userID, deviceID string, pos int64) error {
	return s.store.DeleteToDeviceUpTo(ctx, userID, deviceID, pos)
}
