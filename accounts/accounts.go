// Package accounts owns local users: registration, passwords, devices, access
// and refresh tokens, user-interactive auth, profiles, account data and filters.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what accounts needs from storage.
type Store interface {
	CreateUser(ctx context.Context, u storage.User) error
	GetUser(ctx context.Context, userID string) (*storage.User, error)
	CreateDeviceWithToken(ctx context.Context, d storage.Device, accessHash string, expiresTS int64, refreshHash string) error
	LookupAccessToken(ctx context.Context, tokenHash string) (*storage.TokenOwner, error)
}

// Service implements account operations for the client API and the CLI.
type Service struct {
	store Store
	cfg   *config.Config
	now   func() time.Time
}

// New returns an accounts service over store.
func New(store Store, cfg *config.Config) *Service {
	return &Service{store: store, cfg: cfg, now: time.Now}
}

// ServerName is the local server's name.
func (s *Service) ServerName() string { return s.cfg.ServerName }

// UserID builds a local user ID from a localpart.
func (s *Service) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.cfg.ServerName)
}

var localpartRE = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

// ValidateLocalpart applies the spec's user ID grammar and the reserved names:
// M_INVALID_USERNAME or M_EXCLUSIVE.
func (s *Service) ValidateLocalpart(localpart string) error {
	if localpart == "" || !localpartRE.MatchString(localpart) {
		return mxhttp.InvalidUsername("User ID may only contain a-z, 0-9, and the characters . _ = - / +")
	}
	if len(s.UserID(localpart)) > 255 {
		return mxhttp.InvalidUsername("User ID is longer than 255 characters")
	}
	if strings.HasPrefix(localpart, "_") {
		return mxhttp.InvalidUsername("User ID may not begin with '_'")
	}
	for _, r := range s.cfg.Register.ReservedUsernames {
		if prefix, ok := strings.CutSuffix(r, "*"); ok && strings.HasPrefix(localpart, prefix) || r == localpart {
			return mxhttp.Exclusive("User ID %q is reserved", localpart)
		}
	}
	return nil
}

// CreateUser creates a local user with a password (empty: password login disabled).
func (s *Service) CreateUser(ctx context.Context, localpart, password string, admin bool) (id.UserID, error) {
	if err := s.ValidateLocalpart(localpart); err != nil {
		return "", err
	}
	userID := s.UserID(localpart)
	hash := ""
	if password != "" {
		hash = HashPassword(password)
	}
	err := s.store.CreateUser(ctx, storage.User{
		UserID: userID.String(), Localpart: localpart, PasswordHash: hash, IsAdmin: admin,
		CreatedTS: s.now().UnixMilli(), DisplayName: localpart,
	})
	if errors.Is(err, storage.ErrUserExists) {
		return "", mxhttp.UserInUse("User ID already taken.")
	}
	if err != nil {
		return "", err
	}
	return userID, nil
}

// Session is a logged-in device with its fresh tokens.
type Session struct {
	UserID       id.UserID
	DeviceID     id.DeviceID
	AccessToken  string
	RefreshToken string
	ExpiresInMS  int64
}

// NewSession creates (or takes over) a device for userID and issues tokens.
func (s *Service) NewSession(ctx context.Context, userID id.UserID, deviceID, displayName, ip string, withRefresh bool) (*Session, error) {
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	sess := &Session{UserID: userID, DeviceID: id.DeviceID(deviceID), AccessToken: newToken("myl_")}
	now := s.now()
	var expires int64
	var refreshHash string
	if withRefresh {
		sess.RefreshToken = newToken("mylr_")
		refreshHash = hashToken(sess.RefreshToken)
		if life := s.cfg.Limits.AccessTokenLifetime.Duration; life > 0 {
			expires = now.Add(life).UnixMilli()
			sess.ExpiresInMS = life.Milliseconds()
		}
	}
	err := s.store.CreateDeviceWithToken(ctx, storage.Device{
		UserID: userID.String(), DeviceID: deviceID, DisplayName: displayName, CreatedTS: now.UnixMilli(), LastSeenIP: ip,
	}, hashToken(sess.AccessToken), expires, refreshHash)
	if err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	return sess, nil
}

// VerifyAccessToken implements authn.Verifier.
func (s *Service) VerifyAccessToken(ctx context.Context, token string) (*authn.Device, error) {
	owner, err := s.store.LookupAccessToken(ctx, hashToken(token))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.UnknownToken("Unknown access token").With("soft_logout", false)
	}
	if err != nil {
		return nil, err
	}
	if owner.Deactivated {
		return nil, mxhttp.UnknownToken("Account is deactivated").With("soft_logout", false)
	}
	if owner.ExpiresTS != 0 && s.now().UnixMilli() >= owner.ExpiresTS {
		// The client may refresh: soft logout keeps its data.
		return nil, mxhttp.UnknownToken("Access token has expired").With("soft_logout", true)
	}
	return &authn.Device{UserID: id.UserID(owner.UserID), DeviceID: id.DeviceID(owner.DeviceID), IsAdmin: owner.IsAdmin}, nil
}

// LoginPassword checks a password and opens a session. Unknown users and wrong
// passwords get the same M_FORBIDDEN so user IDs cannot be probed.
func (s *Service) LoginPassword(ctx context.Context, userID id.UserID, password, deviceID, displayName, ip string, withRefresh bool) (*Session, error) {
	u, err := s.store.GetUser(ctx, userID.String())
	if errors.Is(err, storage.ErrNotFound) {
		CheckPassword(dummyHash, password) // same cost as a real check
		return nil, mxhttp.Forbidden("Invalid username or password")
	}
	if err != nil {
		return nil, err
	}
	if u.PasswordHash == "" || !CheckPassword(u.PasswordHash, password) {
		return nil, mxhttp.Forbidden("Invalid username or password")
	}
	if u.Deactivated {
		return nil, mxhttp.UserDeactivated("This account has been deactivated")
	}
	return s.NewSession(ctx, userID, deviceID, displayName, ip, withRefresh)
}

var dummyHash = HashPassword("timing-equalizer")
