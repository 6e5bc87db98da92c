package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/keyserver"
	"github.com/myelin-chat/myelin/roomserver"
)

// Keys is what the end-to-end encryption handlers need from the keyserver
// (*keyserver.Service).
type Keys interface {
	Upload(ctx context.Context, userID, deviceID string, req *keyserver.UploadRequest) (*keyserver.UploadResponse, error)
	Query(ctx context.Context, requester string, req *keyserver.QueryRequest) (*keyserver.QueryResponse, error)
	Claim(ctx context.Context, req *keyserver.ClaimRequest) (*keyserver.ClaimResponse, error)
	DeviceListChanges(ctx context.Context, userID string, from, to int64) (changed, left []string, err error)

	DeviceSigningNeedsAuth(ctx context.Context, userID string, req *keyserver.DeviceSigningRequest) (bool, error)
	UploadDeviceSigningKeys(ctx context.Context, userID string, req *keyserver.DeviceSigningRequest) error
	UploadSignatures(ctx context.Context, signer string, req map[string]map[string]json.RawMessage) (*keyserver.SignaturesResponse, error)

	SendToDevice(ctx context.Context, sender, senderDevice, eventType, txnID string, messages map[string]map[string]json.RawMessage) error

	CreateBackup(ctx context.Context, userID string, req *keyserver.BackupVersionRequest) (string, error)
	GetBackup(ctx context.Context, userID, version string) (*keyserver.BackupVersionInfo, error)
	UpdateBackup(ctx context.Context, userID, version string, req *keyserver.BackupVersionRequest) error
	DeleteBackup(ctx context.Context, userID, version string) error
	PutBackupKeys(ctx context.Context, userID, version string, rooms map[string]keyserver.RoomKeyBackup) (*keyserver.BackupKeysResponse, error)
	GetBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (map[string]keyserver.RoomKeyBackup, error)
	DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (*keyserver.BackupKeysResponse, error)

	PutDehydratedDevice(ctx context.Context, userID string, req *keyserver.DehydratedDeviceRequest) (string, error)
	GetDehydratedDevice(ctx context.Context, userID string) (*keyserver.DehydratedDevice, error)
	DeleteDehydratedDevice(ctx context.Context, userID string) (string, error)
	DehydratedDeviceEvents(ctx context.Context, userID, deviceID, from string) (*keyserver.DehydratedEvents, error)
}

// keyRoutes are /keys/*, /sendToDevice and /room_keys/*.
func (a *API) keyRoutes(r chi.Router) {
	if a.Keys == nil {
		return
	}
	r.Method(http.MethodPost, "/keys/upload", mxhttp.JSON(a.keysUpload))
	r.Method(http.MethodPost, "/keys/query", mxhttp.JSON(a.keysQuery))
	r.Method(http.MethodPost, "/keys/claim", mxhttp.JSON(a.keysClaim))
	r.Method(http.MethodGet, "/keys/changes", mxhttp.JSON(a.keysChanges))
	r.Method(http.MethodPost, "/keys/device_signing/upload", mxhttp.JSON(a.keysDeviceSigningUpload))
	r.Method(http.MethodPost, "/keys/signatures/upload", mxhttp.JSON(a.keysSignaturesUpload))
	r.Method(http.MethodPut, "/sendToDevice/{eventType}/{txnId}", mxhttp.JSON(a.sendToDevice))

	r.Method(http.MethodPost, "/room_keys/version", mxhttp.JSON(a.backupCreate))
	r.Method(http.MethodGet, "/room_keys/version", mxhttp.JSON(a.backupGet))
	r.Method(http.MethodGet, "/room_keys/version/{version}", mxhttp.JSON(a.backupGet))
	r.Method(http.MethodPut, "/room_keys/version/{version}", mxhttp.JSON(a.backupUpdate))
	r.Method(http.MethodDelete, "/room_keys/version/{version}", mxhttp.JSON(a.backupDelete))
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
		r.Method(http.MethodGet, p, mxhttp.JSON(a.backupKeysGet))
		r.Method(http.MethodPut, p, mxhttp.JSON(a.backupKeysPut))
		r.Method(http.MethodDelete, p, mxhttp.JSON(a.backupKeysDelete))
	}
}

// keyRoutesUnstable are dehydrated devices (MSC3814) under
// /_matrix/client/unstable/org.matrix.msc3814.v1.
func (a *API) keyRoutesUnstable(r chi.Router) {
	if a.Keys == nil {
		return
	}
	r.Route("/org.matrix.msc3814.v1", func(r chi.Router) {
		r.Method(http.MethodPut, "/dehydrated_device", mxhttp.JSON(a.dehydratedPut))
		r.Method(http.MethodGet, "/dehydrated_device", mxhttp.JSON(a.dehydratedGet))
		r.Method(http.MethodDelete, "/dehydrated_device", mxhttp.JSON(a.dehydratedDelete))
		// The MSC says GET with ?from=; matrix-js-sdk (like Synapse) POSTs {"next_batch": ...}.
		r.Method(http.MethodGet, "/dehydrated_device/{deviceId}/events", mxhttp.JSON(a.dehydratedEvents))
		r.Method(http.MethodPost, "/dehydrated_device/{deviceId}/events", mxhttp.JSON(a.dehydratedEvents))
	})
}

func (a *API) keysUpload(r *http.Request) (any, error) {
	var req keyserver.UploadRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	dev := authn.FromRequest(r)
	return a.Keys.Upload(r.Context(), dev.UserID.String(), dev.DeviceID.String(), &req)
}

func (a *API) keysQuery(r *http.Request) (any, error) {
	var req keyserver.QueryRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return a.Keys.Query(r.Context(), authn.FromRequest(r).UserID.String(), &req)
}

func (a *API) keysClaim(r *http.Request) (any, error) {
	var req keyserver.ClaimRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return a.Keys.Claim(r.Context(), &req)
}

// SyncTokenPosition reads the stream position out of a /sync token. The sync
// module owns the token format and may replace this; the default accepts a
// bare position or "s<position>" optionally followed by "_..." parts.
var SyncTokenPosition = func(token string) (int64, bool) {
	t := strings.TrimPrefix(token, "s")
	if i := strings.IndexByte(t, '_'); i >= 0 {
		t = t[:i]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	return n, err == nil && n >= 0
}

func (a *API) keysChanges(r *http.Request) (any, error) {
	q := r.URL.Query()
	from, ok1 := SyncTokenPosition(q.Get("from"))
	to, ok2 := SyncTokenPosition(q.Get("to"))
	if q.Get("from") == "" || q.Get("to") == "" {
		return nil, mxhttp.MissingParam("from and to are required")
	}
	if !ok1 || !ok2 {
		return nil, mxhttp.InvalidParam("from and to must be sync tokens")
	}
	changed, left, err := a.Keys.DeviceListChanges(r.Context(), authn.FromRequest(r).UserID.String(), from, to)
	if err != nil {
		return nil, err
	}
	return map[string][]string{"changed": changed, "left": left}, nil
}

func (a *API) keysDeviceSigningUpload(r *http.Request) (any, error) {
	var req struct {
		keyserver.DeviceSigningRequest
		Auth json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	user := authn.FromRequest(r).UserID.String()
	needs, err := a.Keys.DeviceSigningNeedsAuth(r.Context(), user, &req.DeviceSigningRequest)
	if err != nil {
		return nil, err
	}
	if needs {
		if err := a.requireUIA(r, req.Auth); err != nil {
			return nil, err
		}
	}
	return mxhttp.EmptyOr(a.Keys.UploadDeviceSigningKeys(r.Context(), user, &req.DeviceSigningRequest))
}

func (a *API) keysSignaturesUpload(r *http.Request) (any, error) {
	var req map[string]map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return a.Keys.UploadSignatures(r.Context(), authn.FromRequest(r).UserID.String(), req)
}

func (a *API) sendToDevice(r *http.Request) (any, error) {
	eventType := mxhttp.PathParam(r, "eventType")
	if !roomserver.ValidEventType(eventType) {
		// The type is stored with, and relayed to, every recipient device.
		return nil, mxhttp.InvalidParam("Invalid event type: 1 to %d bytes, no control characters", roomserver.MaxFieldBytes)
	}
	txnID, err := txnIDParam(r, "txnId")
	if err != nil {
		return nil, err
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	dev := authn.FromRequest(r)
	return mxhttp.EmptyOr(a.Keys.SendToDevice(r.Context(), dev.UserID.String(), dev.DeviceID.String(), eventType, txnID, req.Messages))
}

func (a *API) backupCreate(r *http.Request) (any, error) {
	var req keyserver.BackupVersionRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	v, err := a.Keys.CreateBackup(r.Context(), authn.FromRequest(r).UserID.String(), &req)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": v}, nil
}

func (a *API) backupGet(r *http.Request) (any, error) {
	version := mxhttp.PathParam(r, "version")
	return a.Keys.GetBackup(r.Context(), authn.FromRequest(r).UserID.String(), version)
}

func (a *API) backupUpdate(r *http.Request) (any, error) {
	version := mxhttp.PathParam(r, "version")
	var req keyserver.BackupVersionRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(a.Keys.UpdateBackup(r.Context(), authn.FromRequest(r).UserID.String(), version, &req))
}

func (a *API) backupDelete(r *http.Request) (any, error) {
	version := mxhttp.PathParam(r, "version")
	return mxhttp.EmptyOr(a.Keys.DeleteBackup(r.Context(), authn.FromRequest(r).UserID.String(), version))
}

// backupPath reads roomId and sessionId (either may be absent).
func backupPath(r *http.Request) (roomID, sessionID string) {
	return mxhttp.PathParam(r, "roomId"), mxhttp.PathParam(r, "sessionId")
}

func (a *API) backupKeysGet(r *http.Request) (any, error) {
	roomID, sessionID := backupPath(r)
	rooms, err := a.Keys.GetBackupKeys(r.Context(), authn.FromRequest(r).UserID.String(), r.URL.Query().Get("version"), roomID, sessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != "":
		k, ok := rooms[roomID].Sessions[sessionID]
		if !ok {
			return nil, mxhttp.NotFound("No key for this session in the backup")
		}
		return k, nil
	case roomID != "":
		rk, ok := rooms[roomID]
		if !ok {
			// The spec: an unknown room is an empty object of sessions, not an error.
			rk = keyserver.RoomKeyBackup{Sessions: map[string]keyserver.KeyBackupData{}}
		}
		return rk, nil
	}
	return map[string]any{"rooms": rooms}, nil
}

func (a *API) backupKeysPut(r *http.Request) (any, error) {
	roomID, sessionID := backupPath(r)
	rooms := map[string]keyserver.RoomKeyBackup{}
	switch {
	case sessionID != "":
		var k keyserver.KeyBackupData
		if err := mxhttp.ReadJSON(r, &k); err != nil {
			return nil, err
		}
		rooms[roomID] = keyserver.RoomKeyBackup{Sessions: map[string]keyserver.KeyBackupData{sessionID: k}}
	case roomID != "":
		var rk keyserver.RoomKeyBackup
		if err := mxhttp.ReadJSON(r, &rk); err != nil {
			return nil, err
		}
		rooms[roomID] = rk
	default:
		var body struct {
			Rooms map[string]keyserver.RoomKeyBackup `json:"rooms"`
		}
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			return nil, err
		}
		rooms = body.Rooms
	}
	return a.Keys.PutBackupKeys(r.Context(), authn.FromRequest(r).UserID.String(), r.URL.Query().Get("version"), rooms)
}

func (a *API) backupKeysDelete(r *http.Request) (any, error) {
	roomID, sessionID := backupPath(r)
	return a.Keys.DeleteBackupKeys(r.Context(), authn.FromRequest(r).UserID.String(), r.URL.Query().Get("version"), roomID, sessionID)
}

func (a *API) dehydratedPut(r *http.Request) (any, error) {
	var req keyserver.DehydratedDeviceRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	id, err := a.Keys.PutDehydratedDevice(r.Context(), authn.FromRequest(r).UserID.String(), &req)
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": id}, nil
}

func (a *API) dehydratedGet(r *http.Request) (any, error) {
	return a.Keys.GetDehydratedDevice(r.Context(), authn.FromRequest(r).UserID.String())
}

func (a *API) dehydratedDelete(r *http.Request) (any, error) {
	id, err := a.Keys.DeleteDehydratedDevice(r.Context(), authn.FromRequest(r).UserID.String())
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": id}, nil
}

func (a *API) dehydratedEvents(r *http.Request) (any, error) {
	deviceID := mxhttp.PathParam(r, "deviceId")
	from := r.URL.Query().Get("from")
	if r.Method == http.MethodPost {
		var body struct {
			NextBatch string `json:"next_batch"`
		}
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			return nil, err
		}
		from = body.NextBatch
	}
	return a.Keys.DehydratedDeviceEvents(r.Context(), authn.FromRequest(r).UserID.String(), deviceID, from)
}
