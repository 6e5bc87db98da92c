package push

import (
	"context"
	"encoding/json"
	"net/url"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/netguard"
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

// Bounds on the free-text fields of a pusher (the spec bounds app_id and
// pushkey only); the whole pusher is stored and served back.
const (
	maxPusherTextBytes = 1024 // app_display_name, device_display_name, profile_tag
	maxPusherLangBytes = 64
	maxPusherDataBytes = 8 * 1024
	maxGatewayURLBytes = 2048
)

// gatewayPath is the path the spec requires of an http pusher's data.url.
const gatewayPath = "/_matrix/push/v1/notify"

// checkGatewayURL checks an http pusher's data.url: an absolute http(s) URL
// with the spec's path, on a public host unless push.allow_private_gateways.
// The host is not resolved here (DNS may change by delivery time): push
// delivery, when it exists, must dial through netguard's address check too.
func (s *Service) checkGatewayURL(raw string) error {
	if len(raw) > maxGatewayURLBytes {
		return mxhttp.InvalidParam("data.url is longer than %d bytes", maxGatewayURLBytes)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "" {
		return mxhttp.InvalidParam("data.url must be an absolute https (or http) URL")
	}
	if u.Path != gatewayPath {
		return mxhttp.InvalidParam("data.url must have the path %s", gatewayPath)
	}
	if !s.allowPrivateGateways && !netguard.CheckHostLiteral(u.Hostname()) {
		return mxhttp.InvalidParam("data.url must name a push gateway on a public address")
	}
	return nil
}

// checkPusherText bounds the free-text fields.
func checkPusherText(req PusherRequest) error {
	for name, v := range map[string]string{"app_display_name": req.AppDisplayName,
		"device_display_name": req.DeviceDisplayName, "profile_tag": req.ProfileTag} {
		if len(v) > maxPusherTextBytes {
			return mxhttp.InvalidParam("%s is longer than %d bytes", name, maxPusherTextBytes)
		}
	}
	if len(req.Lang) > maxPusherLangBytes {
		return mxhttp.InvalidParam("lang is longer than %d bytes", maxPusherLangBytes)
	}
	if len(req.Data) > maxPusherDataBytes {
		return mxhttp.InvalidParam("data is larger than %d bytes", maxPusherDataBytes)
	}
	return nil
}

// SetPusher creates, replaces or (kind null) deletes a pusher. http pushers
// are delivered to (delivery.go); email pushers are refused (no mailer).
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
	if *req.Kind == "email" {
		// Pushers set earlier stay stored, but nothing is ever mailed.
		return mxhttp.InvalidParam("email pushers are not available: this server has no mailer configured")
	}
	if req.AppDisplayName == "" || req.DeviceDisplayName == "" || req.Lang == "" || len(req.Data) == 0 {
		return mxhttp.MissingParam("app_display_name, device_display_name, lang and data are required")
	}
	if err := checkPusherText(req); err != nil {
		return err
	}
	// data is kept as the client sent it (the JSON edge checked it): decoding
	// it into Go values would round integers beyond 2^53.
	var data map[string]json.RawMessage
	if err := json.Unmarshal(req.Data, &data); err != nil || data == nil {
		return mxhttp.BadJSON("data must be an object")
	}
	if *req.Kind == "http" {
		rawURL, present := data["url"]
		if !present {
			return mxhttp.MissingParam("data.url is required for http pushers")
		}
		var u string
		if err := json.Unmarshal(rawURL, &u); err != nil {
			return mxhttp.BadJSON("data.url must be a string")
		}
		if err := s.checkGatewayURL(u); err != nil {
			return err
		}
	}
	pusher := map[string]any{
		"app_id": *req.AppID, "pushkey": *req.PushKey, "kind": *req.Kind,
		"app_display_name": req.AppDisplayName, "device_display_name": req.DeviceDisplayName,
		"lang": req.Lang, "data": req.Data,
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
