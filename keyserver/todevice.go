package keyserver

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

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
// Messages to remote users are queued first, durably, as m.direct_to_device
// EDUs (Options.EDUs); messages to local devices are then stored for /sync.
// A crash between the two loses nothing: the client, not answered, retries,
// and the EDUs' message IDs (derived from the txnId) make the remote copies
// idempotent. Without EDUs (federation off) a request naming a remote user
// is refused before anything is stored (the server does not pretend to
// deliver what it cannot).
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
	if len(remote) > 0 && s.edus == nil {
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
	if err := s.queueRemoteToDevice(ctx, remote, sender, senderDevice, eventType, txnID, messages); err != nil {
		return err
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
	if !dup {
		s.notifier.Notify(pos, delivered...)
	}
	return nil
}

// maxEDUContentBytes bounds an m.direct_to_device EDU's content, as
// receivers bound any EDU's (ingest.MaxEDUBytes).
const maxEDUContentBytes = 64 * 1024

// directToDevice is the content of an m.direct_to_device EDU.
type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// queueRemoteToDevice queues the messages for remote users as
// m.direct_to_device EDUs, per server, each EDU's content within
// maxEDUContentBytes (a request's messages split over several EDUs as
// needed). Each EDU's message_id is derived from the sender's device, the
// txnId, the server and the part: the same on a client's retry, so the
// receiving server stores it once. A single message too large for an EDU
// is refused (M_TOO_LARGE) before anything is queued.
func (s *Service) queueRemoteToDevice(ctx context.Context, remote map[string][]string, sender, senderDevice, eventType,
	txnID string, messages map[string]map[string]json.RawMessage) error {
	servers := make([]string, 0, len(remote))
	for srv := range remote {
		servers = append(servers, srv)
	}
	sort.Strings(servers)
	type edu struct {
		server  string
		content json.RawMessage
	}
	var edus []edu
	for _, srv := range servers {
		users := slices.Clone(remote[srv])
		sort.Strings(users)
		envelope := directToDevice{Sender: sender, Type: eventType, MessageID: strings.Repeat("x", 43)}
		base, _ := json.Marshal(envelope)
		part := map[string]map[string]json.RawMessage{}
		size := len(base)
		flush := func() error {
			if len(part) == 0 {
				return nil
			}
			d := directToDevice{Sender: sender, Type: eventType, Messages: part,
				MessageID: toDeviceMessageID(sender, senderDevice, txnID, srv, len(edus))}
			raw, err := json.Marshal(d)
			if err != nil {
				return fmt.Errorf("encoding a to-device EDU: %w", err)
			}
			if len(raw) > maxEDUContentBytes {
				return mxhttp.TooLarge("To-device message for %s too large for federation (%d bytes)", srv, len(raw))
			}
			edus = append(edus, edu{srv, raw})
			part, size = map[string]map[string]json.RawMessage{}, len(base)
			return nil
		}
		for _, u := range users {
			devs := slices.Sorted(maps.Keys(messages[u]))
			for _, dev := range devs {
				uk, _ := json.Marshal(u)
				dk, _ := json.Marshal(dev)
				cost := len(dk) + 1 + len(messages[u][dev]) + 1
				if part[u] == nil {
					cost += len(uk) + 3
				}
				if size+cost > maxEDUContentBytes {
					if err := flush(); err != nil {
						return err
					}
					cost += len(uk) + 3
				}
				if part[u] == nil {
					part[u] = map[string]json.RawMessage{}
				}
				part[u][dev] = messages[u][dev]
				size += cost
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
	for _, e := range edus {
		if err := s.edus.QueueEDU(context.WithoutCancel(ctx), []string{e.server}, "m.direct_to_device", e.content, false); err != nil {
			return fmt.Errorf("queueing a to-device EDU to %s: %w", e.server, err)
		}
	}
	return nil
}

// toDeviceMessageID names one m.direct_to_device EDU of a client request:
// unique per sending device, transaction, destination and part, and the
// same when the client retries; 43 characters, whatever the IDs' lengths.
func toDeviceMessageID(sender, senderDevice, txnID, server string, part int) string {
	h := sha256.New()
	for _, v := range []string{sender, senderDevice, txnID, server, strconv.Itoa(part)} {
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// Inbound m.direct_to_device bounds: a message ID is kept per origin.
const maxMessageIDBytes = 255

// ReceiveToDeviceEDU takes an inbound m.direct_to_device EDU from origin
// (an ingest.EDUHandler): its sender must be a user of origin; the messages
// for our users are stored once per (origin, message_id), "*" reaching all
// of the user's devices. The others are dropped.
func (s *Service) ReceiveToDeviceEDU(ctx context.Context, origin string, content json.RawMessage) error {
	var d directToDevice
	if err := json.Unmarshal(content, &d); err != nil {
		return fmt.Errorf("m.direct_to_device from %s: %w", origin, err)
	}
	if d.Type == "" || d.MessageID == "" || len(d.MessageID) > maxMessageIDBytes {
		return fmt.Errorf("m.direct_to_device from %s: missing type, or message_id missing or too long", origin)
	}
	for u, devs := range d.Messages {
		for dev, c := range devs {
			var obj map[string]json.RawMessage
			if dev == "" || json.Unmarshal(c, &obj) != nil || obj == nil {
				delete(devs, dev) // not a message: drop it, keep the others
			}
		}
		if len(devs) == 0 {
			delete(d.Messages, u)
		}
	}
	return s.ReceiveToDevice(ctx, origin, d.Sender, d.Type, d.MessageID, d.Messages)
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
	if len(msgs) == 0 { // nothing for our users: nothing to store, not even the message ID
		return nil
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
