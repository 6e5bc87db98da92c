// Package servernotices sends server notices (spec: client-server API,
// "Server Notices"): messages from the server's system user to one local
// user, in a private room tagged m.server_notice that the system user creates
// on the first notice and reuses for every later one. The user cannot reject
// its invite (the roomserver looks the room up in the store); once joined, they may
// leave, and the next notice invites them again.
package servernotices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// TagServerNotice is the room tag of a server notices room.
const TagServerNotice = "m.server_notice"

// Rooms is what the module needs of the roomserver: it acts as the system user.
type Rooms interface {
	CreateRoom(ctx context.Context, sender id.UserID, req *roomserver.CreateRoomRequest) (id.RoomID, error)
	ChangeMembership(ctx context.Context, a roomserver.MembershipAction) error
	Send(ctx context.Context, r roomserver.SendRequest) (id.EventID, error)
}

// RoomView reads a room as the system user may (roomview).
type RoomView interface {
	StateEvent(ctx context.Context, user id.UserID, roomID id.RoomID, evType, stateKey string) (json.RawMessage, error)
}

// Tags sets a room tag (the accounts module: tags are room account data).
type Tags interface {
	SetTag(ctx context.Context, user id.UserID, roomID id.RoomID, tag string, content json.RawMessage) error
}

// Store holds the users and each user's notices room.
type Store interface {
	GetUser(ctx context.Context, userID string) (*storage.User, error)
	CreateUser(ctx context.Context, u storage.User) error
	ServerNoticeRoom(ctx context.Context, userID string) (string, error)
	SetServerNoticeRoom(ctx context.Context, userID, roomID string) error
}

// Service sends server notices.
type Service struct {
	rooms      Rooms
	view       RoomView
	tags       Tags
	store      Store
	cfg        config.ServerNotices
	serverName string
	// mu serializes notices: two at once for a new user would create two rooms.
	mu sync.Mutex
}

// Options are what the module is built from.
type Options struct {
	Rooms  Rooms
	View   RoomView // the user's membership of their notices room
	Tags   Tags     // the notice room's m.server_notice tag
	Store  Store
	Config *config.Config
}

// New returns the module.
func New(o Options) *Service {
	return &Service{rooms: o.Rooms, view: o.View, tags: o.Tags, store: o.Store, cfg: o.Config.ServerNotices, serverName: o.Config.ServerName}
}

// SystemUser is the user that sends the notices.
func (s *Service) SystemUser() id.UserID {
	return id.NewUserID(s.cfg.SystemUserLocalpart, s.serverName)
}

// Notice is the body of POST /_synapse/admin/v1/send_server_notice.
type Notice struct {
	UserID   id.UserID       `json:"user_id"`
	Content  json.RawMessage `json:"content"`
	Type     string          `json:"type"`      // default m.room.message
	StateKey *string         `json:"state_key"` // set: a state event
}

// Send delivers n to its user, as the system user, and returns the event ID.
// A retried txnID (per admin) returns the first event.
func (s *Service) Send(ctx context.Context, admin id.UserID, n Notice, txnID string) (id.EventID, error) {
	if !s.cfg.Enabled {
		return "", mxhttp.Unrecognized("Server notices are not enabled")
	}
	if err := s.checkTarget(ctx, n.UserID); err != nil {
		return "", err
	}
	if len(n.Content) == 0 {
		return "", mxhttp.MissingParam("content is required")
	}
	if n.Type == "" {
		n.Type = "m.room.message"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ensureSystemUser(ctx); err != nil {
		return "", err
	}
	roomID, err := s.noticeRoom(ctx, n.UserID)
	if err != nil {
		return "", err
	}
	req := roomserver.SendRequest{Sender: s.SystemUser(), RoomID: roomID, Type: n.Type,
		StateKey: n.StateKey, Content: n.Content}
	if txnID != "" {
		// The system user has no devices: the admin's ID keeps one admin's
		// transaction IDs apart from another's.
		req.DeviceID, req.TxnID = id.DeviceID("admin:"+admin.String()), txnID
	}
	return s.rooms.Send(ctx, req)
}

// checkTarget: a local user that exists (404 M_NOT_FOUND otherwise) and is
// not the system user itself.
func (s *Service) checkTarget(ctx context.Context, user id.UserID) error {
	local, server, err := user.Parse()
	if err != nil || local == "" {
		return mxhttp.InvalidParam("user_id must be a user ID")
	}
	if server != s.serverName {
		return mxhttp.NotFound("Server notices go to local users only")
	}
	if user == s.SystemUser() {
		return mxhttp.InvalidParam("The system user cannot be sent notices")
	}
	u, err := s.store.GetUser(ctx, user.String())
	if errors.Is(err, storage.ErrNotFound) || err == nil && u.Deactivated {
		return mxhttp.NotFound("Unknown user")
	}
	if err != nil {
		return fmt.Errorf("loading notice target %s: %w", user, err)
	}
	return nil
}

// ensureSystemUser creates the system user's row (no password: no one can
// log in as it) the first time a notice is sent.
func (s *Service) ensureSystemUser(ctx context.Context) error {
	err := s.store.CreateUser(ctx, storage.User{
		UserID: s.SystemUser().String(), Localpart: s.cfg.SystemUserLocalpart,
		CreatedTS: time.Now().UnixMilli(), DisplayName: s.cfg.RoomName,
	})
	if err != nil && !errors.Is(err, storage.ErrUserExists) {
		return fmt.Errorf("creating the server notices user: %w", err)
	}
	return nil
}

// noticeRoom returns the user's notices room with the user invited or
// joined: created on the first notice, the user invited again if they left.
func (s *Service) noticeRoom(ctx context.Context, user id.UserID) (id.RoomID, error) {
	stored, err := s.store.ServerNoticeRoom(ctx, user.String())
	if errors.Is(err, storage.ErrNotFound) {
		return s.createRoom(ctx, user)
	}
	if err != nil {
		return "", err
	}
	roomID := id.RoomID(stored)
	switch membership, err := s.membership(ctx, roomID, user); {
	case err != nil:
		return "", err
	case membership == "join" || membership == "invite":
		return roomID, nil
	}
	if err := s.rooms.ChangeMembership(ctx, roomserver.MembershipAction{
		Sender: s.SystemUser(), RoomID: roomID, Target: user, Action: "invite",
	}); err != nil {
		return "", fmt.Errorf("inviting %s to their server notices room again: %w", user, err)
	}
	return roomID, nil
}

func (s *Service) createRoom(ctx context.Context, user id.UserID) (id.RoomID, error) {
	roomID, err := s.rooms.CreateRoom(ctx, s.SystemUser(), &roomserver.CreateRoomRequest{
		Preset: "private_chat", Name: s.cfg.RoomName, Invite: []string{user.String()},
		// The user reads notices; only the system user speaks (as Synapse).
		PowerLevelContentOverride: map[string]json.RawMessage{"users_default": json.RawMessage("-10")},
	})
	if err != nil {
		return "", fmt.Errorf("creating the server notices room of %s: %w", user, err)
	}
	if err := s.store.SetServerNoticeRoom(ctx, user.String(), roomID.String()); err != nil {
		return "", err
	}
	// The tag is the user's room account data: their clients show the room apart.
	if err := s.tags.SetTag(ctx, user, roomID, TagServerNotice, json.RawMessage(`{}`)); err != nil {
		return "", fmt.Errorf("tagging the server notices room of %s: %w", user, err)
	}
	return roomID, nil
}

// membership is the user's membership in the room as the system user sees it
// ("" when they never had one).
func (s *Service) membership(ctx context.Context, roomID id.RoomID, user id.UserID) (string, error) {
	ev, err := s.view.StateEvent(ctx, s.SystemUser(), roomID, "m.room.member", user.String())
	if errors.Is(err, roomserver.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s's membership of their server notices room: %w", user, err)
	}
	var c struct {
		Content struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	if err := json.Unmarshal(ev, &c); err != nil {
		return "", fmt.Errorf("corrupt member event in %s: %w", roomID, err)
	}
	return c.Content.Membership, nil
}
