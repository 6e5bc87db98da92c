package accounts

import (
	"context"
	"errors"
	"log/slog"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Device is a device as the client API lists it.
type Device struct {
	DeviceID    id.DeviceID `json:"device_id"`
	DisplayName *string     `json:"display_name,omitempty"`
	LastSeenIP  string      `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64       `json:"last_seen_ts,omitempty"`
}

func toDevice(d storage.Device) Device {
	out := Device{DeviceID: id.DeviceID(d.DeviceID), LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
	if d.DisplayName != "" {
		name := d.DisplayName
		out.DisplayName = &name
	}
	return out
}

// ListDevices returns the user's devices.
func (s *Service) ListDevices(ctx context.Context, userID id.UserID) ([]Device, error) {
	list, err := s.store.ListDevices(ctx, userID.String())
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(list))
	for _, d := range list {
		out = append(out, toDevice(d))
	}
	return out, nil
}

// GetDevice returns one device; M_NOT_FOUND if the user has no such device.
func (s *Service) GetDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID) (*Device, error) {
	d, err := s.store.GetDevice(ctx, userID.String(), string(deviceID))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown device")
	}
	if err != nil {
		return nil, err
	}
	out := toDevice(*d)
	return &out, nil
}

// DeviceExists reports whether the user has the device.
func (s *Service) DeviceExists(ctx context.Context, userID id.UserID, deviceID id.DeviceID) (bool, error) {
	_, err := s.store.GetDevice(ctx, userID.String(), string(deviceID))
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// SetDeviceDisplayName renames a device; M_NOT_FOUND if it does not exist.
func (s *Service) SetDeviceDisplayName(ctx context.Context, userID id.UserID, deviceID id.DeviceID, name string) error {
	if len(name) > maxDeviceNameLength {
		return mxhttp.InvalidParam("display_name is longer than %d bytes", maxDeviceNameLength)
	}
	err := s.store.SetDeviceDisplayName(ctx, userID.String(), string(deviceID), name)
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("Unknown device")
	}
	if err != nil || s.devices == nil {
		return err
	}
	// The rename is stored: announcing it is best effort (logged), as for a
	// deleted device.
	if err := s.devices.DeviceRenamed(context.WithoutCancel(ctx), userID.String(), string(deviceID)); err != nil {
		slog.ErrorContext(ctx, "announcing a renamed device", "user", userID, "device", deviceID, "err", err)
	}
	return nil
}

// DeleteDevices deletes devices and their tokens, then runs the
// keyserver drops the keys of those that existed.
func (s *Service) DeleteDevices(ctx context.Context, userID id.UserID, deviceIDs []id.DeviceID) error {
	ids := make([]string, len(deviceIDs))
	for i, d := range deviceIDs {
		ids[i] = string(d)
	}
	deleted, err := s.store.DeleteDevices(ctx, userID.String(), ids)
	if err != nil {
		return err
	}
	s.fireDeviceDeleted(ctx, userID, deleted)
	return nil
}

// seenInterval is how often a device's last_seen_ts/ip is written at most.
const seenInterval = 60 * 1000 // ms

// Seen records that a device made a request from ip. It writes to the store at
// most once per seenInterval per device, so it is cheap on every request.
func (s *Service) Seen(ctx context.Context, userID id.UserID, deviceID id.DeviceID, ip string) {
	now := s.now().UnixMilli()
	key := userID.String() + "|" + string(deviceID)
	s.seenMu.Lock()
	last := s.seen[key]
	if now-last < seenInterval {
		s.seenMu.Unlock()
		return
	}
	s.seen[key] = now
	s.seenMu.Unlock()
	if err := s.store.TouchDevice(context.WithoutCancel(ctx), userID.String(), string(deviceID), now, ip); err != nil {
		slog.WarnContext(ctx, "recording device last seen", "user_id", userID, "device_id", deviceID, "err", err)
	}
}
