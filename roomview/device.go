package roomview

import (
	"context"

	"maunium.net/go/mautrix/id"
)

type deviceKey struct{}

type requester struct {
	user   id.UserID
	device id.DeviceID
}

// WithDevice tells the read APIs (Event, Messages, Context, State, Members,
// Relations, Threads) which device of user is asking: events that device sent
// with a transaction ID carry unsigned.transaction_id, for no one else.
func WithDevice(ctx context.Context, user id.UserID, device id.DeviceID) context.Context {
	return context.WithValue(ctx, deviceKey{}, requester{user, device})
}

// requestingDevice is the device WithDevice recorded for user ("" if none).
func requestingDevice(ctx context.Context, user id.UserID) id.DeviceID {
	if r, ok := ctx.Value(deviceKey{}).(requester); ok && r.user == user {
		return r.device
	}
	return ""
}
