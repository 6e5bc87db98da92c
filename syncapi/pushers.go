package syncapi

import (
	"context"
	"encoding/json"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// PusherRequest is the body of POST /pushers/set.
type PusherRequest struct {
	AppID             *string         `json:"app_id"`
	PushKey           *string         `json:"pushkey"`
	Kind              *string         `json:"kind"` // null deletes
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            bool            `json:"append"`
}

// SetPusher creates, replaces or (kind null) deletes a pusher. Delivery to
// push gateways is not implemented yet: pushers are only stored.
func (s *Service) SetPusher(ctx context.Context, userID, deviceID string, req PusherRequest) error {
	if req.AppID == nil || *req.AppID == "" || req.PushKey == nil || *req.PushKey == "" {
		return mxhttp.MissingParam("app_id and pushkey are required")
	}
	if len(*req.AppID) > 64 {
		return mxhttp.InvalidParam("app_id is longer than 64 characters")
	}
	if len(*req.PushKey) > 512 {
		return mxhttp.InvalidParam("pushkey is longer than 512 bytes")
	}
	if req.Kind == nil {
		return s.db.DeletePusher(ctx, userID, *req.AppID, *req.PushKey)
	}
	if *req.Kind != "http" && *req.Kind != "email" {
		return mxhttp.InvalidParam("kind must be http, email or null")
	}
	if req.AppDisplayName == "" || req.DeviceDisplayName == "" || req.Lang == "" || len(req.Data) == 0 {
		return mxhttp.MissingParam("app_display_name, device_display_name, lang and data are required")
	}
	var data map[string]any
	if err := json.Unmarshal(req.Data, &data); err != nil || data == nil {
		return mxhttp.BadJSON("data must be an object")
	}
	if *req.Kind == "http" {
		u, _ := data["url"].(string)
		if u == "" {
			return mxhttp.MissingParam("data.url is required for http pushers")
		}
	}
	pusher := map[string]any{
		"app_id": *req.AppID, "pushkey": *req.PushKey, "kind": *req.Kind,
		"app_display_name": req.AppDisplayName, "device_display_name": req.DeviceDisplayName,
		"lang": req.Lang, "data": data,
	}
	if req.ProfileTag != "" {
		pusher["profile_tag"] = req.ProfileTag
	}
	b, _ := json.Marshal(pusher)
	return s.db.SetPusher(ctx, storage.Pusher{
		UserID: userID, AppID: *req.AppID, PushKey: *req.PushKey, DeviceID: deviceID, JSON: string(b),
	}, req.Append)
}

// Pushers lists the user's pushers as the client set them.
func (s *Service) Pushers(ctx context.Context, userID string) ([]json.RawMessage, error) {
	list, err := s.db.Pushers(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(list))
	for _, p := range list {
		out = append(out, json.RawMessage(p.JSON))
	}
	return out, nil
}
