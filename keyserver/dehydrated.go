package keyserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Dehydrated devices (MSC3814, unstable prefix org.matrix.msc3814.v1): a
// user's one offline device, whose keys are uploaded with it and whose
// to-device messages wait until a new login rehydrates it.

const (
	maxDeviceIDBytes   = 255
	maxDeviceNameBytes = 1000
)

// DehydratedDeviceRequest is the body of PUT /dehydrated_device.
type DehydratedDeviceRequest struct {
	DeviceID           string          `json:"device_id"`
	DeviceData         json.RawMessage `json:"device_data"`
	InitialDisplayName string          `json:"initial_device_display_name,omitempty"`
	UploadRequest
}

// DehydratedDevice is the answer to GET /dehydrated_device.
type DehydratedDevice struct {
	DeviceID   string          `json:"device_id"`
	DeviceData json.RawMessage `json:"device_data"`
}

// DehydratedEvents is the answer to the dehydrated device's events endpoint.
type DehydratedEvents struct {
	Events    []ToDeviceEvent `json:"events"`
	NextBatch string          `json:"next_batch,omitempty"`
}

// PutDehydratedDevice replaces the user's dehydrated device with the given
// one, its keys checked as /keys/upload checks them.
func (s *Service) PutDehydratedDevice(ctx context.Context, userID string, req *DehydratedDeviceRequest) (string, error) {
	if req.DeviceID == "" {
		return "", mxhttp.MissingParam("device_id is required")
	}
	// The bounds accounts applies to the devices of a login.
	if len(req.DeviceID) > maxDeviceIDBytes {
		return "", mxhttp.InvalidParam("device_id is longer than %d bytes", maxDeviceIDBytes)
	}
	if len(req.InitialDisplayName) > maxDeviceNameBytes {
		return "", mxhttp.InvalidParam("initial_device_display_name is longer than %d bytes", maxDeviceNameBytes)
	}
	var data struct {
		Algorithm string `json:"algorithm"`
	}
	if err := json.Unmarshal(req.DeviceData, &data); err != nil || data.Algorithm == "" {
		return "", mxhttp.BadJSON("device_data must be an object with an algorithm")
	}
	if !present(req.DeviceKeys) {
		return "", mxhttp.MissingParam("device_keys is required")
	}
	up, err := s.prepareUpload(ctx, userID, req.DeviceID, &req.UploadRequest)
	if err != nil {
		return "", err
	}
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return "", err
	}
	up.StreamPos = pos
	err = s.store.PutDehydratedDevice(ctx, userID, storage.DehydratedDevice{
		DeviceID: req.DeviceID, DeviceData: req.DeviceData, DisplayName: req.InitialDisplayName}, *up)
	finish()
	if storage.IsUniqueViolation(err) {
		return "", mxhttp.InvalidParam("device_id %s is already in use", req.DeviceID)
	}
	if err := uploadError(err); err != nil {
		return "", fmt.Errorf("storing dehydrated device: %w", err)
	}
	s.deviceListChanged(ctx, userID, pos)
	s.announce(ctx, userID) // the new device, and the one it replaced
	return req.DeviceID, nil
}

// GetDehydratedDevice handles GET /dehydrated_device.
func (s *Service) GetDehydratedDevice(ctx context.Context, userID string) (*DehydratedDevice, error) {
	d, err := s.store.GetDehydratedDevice(ctx, userID)
	if isNotFound(err) {
		return nil, mxhttp.NotFound("No dehydrated device available")
	}
	if err != nil {
		return nil, err
	}
	return &DehydratedDevice{DeviceID: d.DeviceID, DeviceData: d.DeviceData}, nil
}

// DeleteDehydratedDevice handles DELETE /dehydrated_device.
func (s *Service) DeleteDehydratedDevice(ctx context.Context, userID string) (string, error) {
	d, err := s.store.GetDehydratedDevice(ctx, userID)
	if isNotFound(err) {
		return "", mxhttp.NotFound("No dehydrated device available")
	}
	if err != nil {
		return "", err
	}
	if err := s.DeleteDevices(ctx, userID, []string{d.DeviceID}); err != nil {
		return "", err
	}
	return d.DeviceID, nil
}

// dehydratedBatch is how many messages one events call returns.
const dehydratedBatch = 100

// DehydratedDeviceEvents returns the dehydrated device's to-device messages
// after the position in from ("" = from the start). They are not deleted: a
// rehydration that fails part-way can be restarted.
func (s *Service) DehydratedDeviceEvents(ctx context.Context, userID, deviceID, from string) (*DehydratedEvents, error) {
	d, err := s.store.GetDehydratedDevice(ctx, userID)
	if isNotFound(err) || err == nil && d.DeviceID != deviceID {
		return nil, mxhttp.Forbidden("%s is not your dehydrated device", deviceID)
	}
	if err != nil {
		return nil, err
	}
	var after int64
	if from != "" {
		if after, err = strconv.ParseInt(from, 10, 64); err != nil || after < 0 {
			return nil, mxhttp.InvalidParam("Invalid next_batch token")
		}
	}
	msgs, err := s.ToDeviceSince(ctx, userID, deviceID, after, dehydratedBatch)
	if err != nil {
		return nil, err
	}
	if len(msgs) > dehydratedBatch {
		msgs = msgs[:dehydratedBatch]
	}
	resp := &DehydratedEvents{Events: msgs}
	// next_batch accompanies every non-empty batch: matrix-js-sdk stops at the
	// first empty batch and otherwise starts over without a token, while MSC
	// clients stop when next_batch is absent; both end after one empty call.
	if len(msgs) > 0 {
		resp.NextBatch = strconv.FormatInt(msgs[len(msgs)-1].StreamPos, 10)
	} else {
		resp.Events = []ToDeviceEvent{}
	}
	return resp, nil
}
