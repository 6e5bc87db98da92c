// Package accounts owns local users: registration, passwords, devices, access
// and refresh tokens, user-interactive auth, profiles, account data and filters.
//
// Other modules follow account changes through the interfaces it is built
// with (Options): deleted devices lose their keys and to-device messages
// (Devices, the keyserver); a changed display name or avatar is sent to the
// user's rooms and a deactivated account leaves them (Rooms, the roomserver).
package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what accounts needs from storage.
type Store interface {
	CreateUser(ctx context.Context, u storage.User) error
	GetUser(ctx context.Context, userID string) (*storage.User, error)
	UserExists(ctx context.Context, userID string) (bool, error)
	SetDisplayName(ctx context.Context, userID, name string) error
	SetAvatarURL(ctx context.Context, userID, url string) error
	SetProfileFields(ctx context.Context, userID string, fields map[string]json.RawMessage) error
	ChangePassword(ctx context.Context, userID, hash string, logoutOthers bool, keepDevice string) ([]string, error)
	DeactivateUser(ctx context.Context, userID string, erase bool) ([]string, error)

	CreateDeviceWithToken(ctx context.Context, d storage.Device, accessHash string, expiresTS int64, refreshHash string) error
	LookupAccessToken(ctx context.Context, tokenHash string) (*storage.TokenOwner, error)
	RotateRefreshToken(ctx context.Context, oldRefreshHash, accessHash string, expiresTS int64, refreshHash string, now int64) (string, string, error)
	ConfirmRefresh(ctx context.Context, userID, deviceID, refreshHash string) error
	CreateLoginToken(ctx context.Context, tokenHash, userID string, expiresTS int64) error
	ConsumeLoginToken(ctx context.Context, tokenHash string, now int64) (string, error)
	CreateOpenIDToken(ctx context.Context, tokenHash, userID string, nowTS, expiresTS int64, maxPerUser int) error
	OpenIDTokenUser(ctx context.Context, tokenHash string, nowTS int64) (string, error)

	ListDevices(ctx context.Context, userID string) ([]storage.Device, error)
	GetDevice(ctx context.Context, userID, deviceID string) (*storage.Device, error)
	SetDeviceDisplayName(ctx context.Context, userID, deviceID, name string) error
	TouchDevice(ctx context.Context, userID, deviceID string, ts int64, ip string) error
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) ([]string, error)
	DeleteOtherDevices(ctx context.Context, userID, keep string) ([]string, error)

	CreateUIASession(ctx context.Context, s storage.UIASession) error
	GetUIASession(ctx context.Context, sessionID string) (*storage.UIASession, error)
	CompleteUIAStage(ctx context.Context, sessionID string, completed []string) error
	ClaimUIASession(ctx context.Context, sessionID string) (registrationToken string, err error)
	ExpireUIASessions(ctx context.Context, before int64) error
	RegistrationTokenUsable(ctx context.Context, token string, now int64) (bool, error)
	ReserveRegistrationToken(ctx context.Context, sessionID, token string, completed []string, now int64) (bool, error)
	SettleRegistrationToken(ctx context.Context, token string, used bool) error

	AllocateStreamPos() (int64, func(), error)
	PutAccountData(ctx context.Context, userID, roomID, typ string, content []byte, pos int64) error
	AccountDataSize(ctx context.Context, userID, roomID, typ string) (int64, error)
	GetAccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error)
	AccountDataSince(ctx context.Context, userID string, fromPos, toPos int64) ([]storage.AccountData, error)
	CreateFilter(ctx context.Context, userID string, filter []byte) (int64, error)
	GetFilter(ctx context.Context, userID string, filterID int64) (json.RawMessage, error)
}

// Notifier wakes /sync long-polls after a commit (internal/notifier).
type Notifier interface {
	Notify(pos int64, users ...string)
}

// DeviceKeys drops what the keyserver holds for deleted devices.
type DeviceKeys interface {
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error
	// DeviceRenamed announces a device's new display name: it is part of
	// the user's device list, as other users and servers see it.
	DeviceRenamed(ctx context.Context, userID, deviceID string) error
}

// Rooms is what accounts asks of the roomserver.
type Rooms interface {
	// OnProfileChanged sends the user's new member event to their rooms.
	OnProfileChanged(ctx context.Context, userID id.UserID) error
	// LeaveAllRooms leaves, rejects and withdraws every membership of a
	// deactivated user.
	LeaveAllRooms(ctx context.Context, userID id.UserID) error
}

// RemoteProfiles asks a user's own server for their profile (GET
// /_matrix/federation/v1/query/profile, through the transport's client).
// It returns ErrRemoteProfileNotFound when that server answers 404.
type RemoteProfiles interface {
	QueryProfile(ctx context.Context, userID id.UserID) (map[string]json.RawMessage, error)
}

// ErrRemoteProfileNotFound is a remote server's 404 to a profile query.
var ErrRemoteProfileNotFound = errors.New("remote server has no such profile")

// Service implements account operations for the client API and the CLI.
type Service struct {
	store    Store
	cfg      *config.Config
	now      func() time.Time
	notifier Notifier
	devices  DeviceKeys
	rooms    Rooms
	remote   RemoteProfiles
	media    Media

	seenMu sync.Mutex
	seen   map[string]int64 // "user|device" -> unix ms of the last last_seen write

	nonces nonceStore // shared-secret registration

	passwordTries *ratelimit.Limiter // password checks per account (login and UIA)
}

// Options are what the accounts service is built from. Notifier, Devices,
// Rooms and Remote may be nil (unit tests): their part is then skipped.
type Options struct {
	Store  Store
	Config *config.Config
	// Notifier is woken after account data changes.
	Notifier Notifier
	Devices  DeviceKeys
	Rooms    Rooms
	// Remote answers profile lookups of other servers' users; nil: they are
	// M_NOT_FOUND.
	Remote RemoteProfiles
	// Media erases the uploads of an account deactivated with erase; nil:
	// there is no content repository.
	Media Media
}

// Media is the content repository as erasure needs it (mediaapi).
type Media interface {
	EraseUserMedia(ctx context.Context, userID string) error
}

// New returns an accounts service.
func New(o Options) *Service {
	return &Service{store: o.Store, cfg: o.Config, now: time.Now, notifier: o.Notifier, devices: o.Devices, rooms: o.Rooms, remote: o.Remote, media: o.Media,
		seen: map[string]int64{}, nonces: nonceStore{m: map[string]time.Time{}},
		passwordTries: ratelimit.New(o.Config.Limits.LoginPerSecond, o.Config.Limits.LoginBurst)}
}

// The follow-ups below run after the change committed, on a context that
// outlives the request; they must not fail it, so they log their own errors.

// fireDeviceDeleted forgets the devices' last-seen writes and drops their
// keys and to-device messages.
func (s *Service) fireDeviceDeleted(ctx context.Context, userID id.UserID, devices []string) {
	if len(devices) == 0 {
		return
	}
	s.seenMu.Lock()
	for _, d := range devices {
		delete(s.seen, userID.String()+"|"+d)
	}
	s.seenMu.Unlock()
	if s.devices == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.devices.DeleteDevices(ctx, userID.String(), devices); err != nil {
		slog.ErrorContext(ctx, "deleting keys of deleted devices", "user", userID, "err", err)
	}
}

// fireProfileChanged updates the user's member events.
func (s *Service) fireProfileChanged(ctx context.Context, userID id.UserID) {
	if s.rooms == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.rooms.OnProfileChanged(ctx, userID); err != nil {
		slog.ErrorContext(ctx, "updating member events after a profile change", "user", userID, "err", err)
	}
}

// fireDeactivated makes a deactivated account leave its rooms, reject its
// invites and withdraw its knocks.
func (s *Service) fireDeactivated(ctx context.Context, userID id.UserID) {
	if s.rooms == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.rooms.LeaveAllRooms(ctx, userID); err != nil {
		slog.ErrorContext(ctx, "leaving the rooms of a deactivated account", "user", userID, "err", err)
	}
}

// fireErased deletes an erased account's uploads. Its events need nothing
// here: the store recorded the erasure, which every renderer applies (a
// failure here is finished at the next start, mediaapi.New).
func (s *Service) fireErased(ctx context.Context, userID id.UserID) {
	if s.media == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.media.EraseUserMedia(ctx, userID.String()); err != nil {
		slog.ErrorContext(ctx, "erasing the media of an erased account", "user", userID, "err", err)
	}
}

// ServerName is the local server's name.
func (s *Service) ServerName() string { return s.cfg.ServerName }

// UserID builds a local user ID from a localpart.
func (s *Service) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.cfg.ServerName)
}

// IsLocal reports whether userID belongs to this server.
func (s *Service) IsLocal(userID id.UserID) bool {
	_, server, err := userID.Parse()
	return err == nil && server == s.cfg.ServerName
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
	if localpart == s.cfg.ServerNotices.SystemUserLocalpart {
		// The server notices sender (created by the servernotices module).
		return mxhttp.Exclusive("User ID %q is reserved for server notices", localpart)
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

// CheckUsernameAvailable validates a localpart and checks it is not taken
// (M_INVALID_USERNAME, M_EXCLUSIVE, M_USER_IN_USE).
func (s *Service) CheckUsernameAvailable(ctx context.Context, localpart string) error {
	if err := s.ValidateLocalpart(localpart); err != nil {
		return err
	}
	taken, err := s.store.UserExists(ctx, s.UserID(localpart).String())
	if err != nil {
		return err
	}
	if taken {
		return mxhttp.UserInUse("User ID already taken.")
	}
	return nil
}

// maxPasswordBytes bounds the work one hash costs.
const maxPasswordBytes = 1024

// CheckPasswordPolicy enforces registration.min_password_length: M_WEAK_PASSWORD.
func (s *Service) CheckPasswordPolicy(password string) error {
	if n := len([]rune(password)); n < s.cfg.Register.MinPasswordLength {
		return mxhttp.WeakPassword("Password must be at least %d characters long", s.cfg.Register.MinPasswordLength)
	}
	if len(password) > maxPasswordBytes {
		return mxhttp.InvalidParam("Password must be at most %d bytes long", maxPasswordBytes)
	}
	return nil
}

// CreateUser creates a local user with a password (empty: password login
// disabled). The password policy is the caller's business (the CLI and
// admin tools may set any password).
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

// GenerateLocalpart picks a free random localpart for registrations without a username.
func (s *Service) GenerateLocalpart(ctx context.Context) (string, error) {
	for range 10 {
		lp := "u" + strings.ToLower(newDeviceID())
		if exists, err := s.store.UserExists(ctx, s.UserID(lp).String()); err != nil {
			return "", err
		} else if !exists {
			return lp, nil
		}
	}
	return "", errors.New("could not generate a free localpart")
}

// ChangePassword sets a new password; with logoutOthers every other device
// (all but keepDevice) is deleted with its tokens.
func (s *Service) ChangePassword(ctx context.Context, userID id.UserID, newPassword string, logoutOthers bool, keepDevice id.DeviceID) error {
	if err := s.CheckPasswordPolicy(newPassword); err != nil {
		return err
	}
	deleted, err := s.store.ChangePassword(ctx, userID.String(), HashPassword(newPassword), logoutOthers, string(keepDevice))
	if err != nil {
		return err
	}
	s.fireDeviceDeleted(ctx, userID, deleted)
	return nil
}

// Deactivate marks the account deactivated and revokes every token and
// device; erase also removes profile, account data and filters, records the
// erasure (the user's events are shown redacted to later readers) and
// deletes the user's uploads.
func (s *Service) Deactivate(ctx context.Context, userID id.UserID, erase bool) error {
	deleted, err := s.store.DeactivateUser(ctx, userID.String(), erase)
	if err != nil {
		return err
	}
	s.fireDeviceDeleted(ctx, userID, deleted)
	s.fireDeactivated(ctx, userID)
	if erase {
		s.fireErased(ctx, userID)
	}
	slog.InfoContext(ctx, "account deactivated", "user_id", userID, "erase", erase)
	return nil
}

// Session is a logged-in device with its fresh tokens.
type Session struct {
	UserID       id.UserID
	DeviceID     id.DeviceID
	AccessToken  string
	RefreshToken string
	ExpiresInMS  int64
}

// maxDeviceIDLength and maxDeviceNameLength bound client-chosen strings.
const (
	maxDeviceIDLength   = 255
	maxDeviceNameLength = 1000
)

// NewSession creates (or takes over) a device for userID and issues tokens.
func (s *Service) NewSession(ctx context.Context, userID id.UserID, deviceID, displayName, ip string, withRefresh bool) (*Session, error) {
	if len(deviceID) > maxDeviceIDLength {
		return nil, mxhttp.InvalidParam("device_id is longer than %d bytes", maxDeviceIDLength)
	}
	if len(displayName) > maxDeviceNameLength {
		return nil, mxhttp.InvalidParam("initial_device_display_name is longer than %d bytes", maxDeviceNameLength)
	}
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	sess := &Session{UserID: userID, DeviceID: id.DeviceID(deviceID)}
	now := s.now()
	accessHash, expires, refreshHash := s.issueTokens(sess, now, withRefresh)
	err := s.store.CreateDeviceWithToken(ctx, storage.Device{
		UserID: userID.String(), DeviceID: deviceID, DisplayName: displayName, CreatedTS: now.UnixMilli(), LastSeenIP: ip,
	}, accessHash, expires, refreshHash)
	if err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	return sess, nil
}

// issueTokens fills sess with a new access token (and refresh token) and
// returns what to store.
func (s *Service) issueTokens(sess *Session, now time.Time, withRefresh bool) (accessHash string, expiresTS int64, refreshHash string) {
	sess.AccessToken = newToken("myl_")
	if withRefresh {
		sess.RefreshToken = newToken("mylr_")
		refreshHash = hashToken(sess.RefreshToken)
		if life := s.cfg.Limits.AccessTokenLifetime.Duration; life > 0 {
			expiresTS = now.Add(life).UnixMilli()
			sess.ExpiresInMS = life.Milliseconds()
		}
	}
	return hashToken(sess.AccessToken), expiresTS, refreshHash
}

// Refresh exchanges a refresh token for a new access token and refresh token.
// As the spec asks, the old refresh token (and the access token issued with
// it) keep working until one of the new tokens is used, so a client that lost
// this answer can refresh again.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (*Session, error) {
	sess := &Session{}
	now := s.now()
	accessHash, expires, refreshHash := s.issueTokens(sess, now, true)
	userID, deviceID, err := s.store.RotateRefreshToken(ctx, hashToken(refreshToken), accessHash, expires, refreshHash, now.UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		// Unknown, revoked by the use of its successor, or its device is gone:
		// nothing to re-login into here, so not a soft logout.
		return nil, mxhttp.UnknownToken("Unknown refresh token").With("soft_logout", false)
	}
	if err != nil {
		return nil, fmt.Errorf("refreshing token: %w", err)
	}
	sess.UserID, sess.DeviceID = id.UserID(userID), id.DeviceID(deviceID)
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
	if owner.RefreshPending {
		// The first use of a refreshed token: the refresh token it replaced
		// (kept for a client that lost the answer) is revoked now.
		if err := s.store.ConfirmRefresh(ctx, owner.UserID, owner.DeviceID, owner.RefreshHash); err != nil {
			return nil, fmt.Errorf("revoking the replaced refresh token: %w", err)
		}
	}
	return &authn.Device{UserID: id.UserID(owner.UserID), DeviceID: id.DeviceID(owner.DeviceID), IsAdmin: owner.IsAdmin}, nil
}

// checkUserPassword verifies userID's password. Unknown users and wrong
// passwords get the same M_FORBIDDEN so user IDs cannot be probed; a
// deactivated account with the right password gets M_USER_DEACTIVATED.
func (s *Service) checkUserPassword(ctx context.Context, userID id.UserID, password string) error {
	// Per account, whatever the client's address: failed passwords through
	// /login or a UIA stage are throttled to the login rate.
	if blocked, wait := s.passwordTries.Blocked(userID.String()); blocked {
		return mxhttp.LimitExceeded("Too many failed password attempts").With("retry_after_ms", wait.Milliseconds()+1)
	}
	err := s.verifyPassword(ctx, userID, password)
	var mErr *mxhttp.Error
	if errors.As(err, &mErr) && mErr.Code == "M_FORBIDDEN" {
		s.passwordTries.Allow(userID.String()) // charge the failure
	}
	return err
}

func (s *Service) verifyPassword(ctx context.Context, userID id.UserID, password string) error {
	u, err := s.store.GetUser(ctx, userID.String())
	if errors.Is(err, storage.ErrNotFound) {
		CheckPassword(dummyHash, password) // same cost as a real check
		return mxhttp.Forbidden("Invalid username or password")
	}
	if err != nil {
		return err
	}
	if u.PasswordHash == "" {
		CheckPassword(dummyHash, password)
		return mxhttp.Forbidden("Invalid username or password")
	}
	if !CheckPassword(u.PasswordHash, password) {
		return mxhttp.Forbidden("Invalid username or password")
	}
	if u.Deactivated {
		return mxhttp.UserDeactivated("This account has been deactivated")
	}
	return nil
}

// LoginPassword checks a password and opens a session.
func (s *Service) LoginPassword(ctx context.Context, userID id.UserID, password, deviceID, displayName, ip string, withRefresh bool) (*Session, error) {
	if len(password) > maxPasswordBytes {
		return nil, mxhttp.Forbidden("Invalid username or password")
	}
	if err := s.checkUserPassword(ctx, userID, password); err != nil {
		return nil, err
	}
	return s.NewSession(ctx, userID, deviceID, displayName, ip, withRefresh)
}

// LoginTokenLifetime is how long a token from CreateLoginToken is valid.
const LoginTokenLifetime = 2 * time.Minute

// CreateLoginToken issues a single-use token for the m.login.token flow.
func (s *Service) CreateLoginToken(ctx context.Context, userID id.UserID) (string, time.Duration, error) {
	token := newToken("mylt_")
	if err := s.store.CreateLoginToken(ctx, hashToken(token), userID.String(), s.now().Add(LoginTokenLifetime).UnixMilli()); err != nil {
		return "", 0, fmt.Errorf("creating login token: %w", err)
	}
	return token, LoginTokenLifetime, nil
}

// OpenIDTokenLifetime is how long an OpenID token is valid (Synapse: 1 h).
const OpenIDTokenLifetime = time.Hour

// MaxOpenIDTokensPerUser bounds a user's live OpenID tokens; the oldest go.
const MaxOpenIDTokensPerUser = 100

// OpenIDCredentials answer POST /user/{userId}/openid/request_token.
type OpenIDCredentials struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"` // seconds
}

// RequestOpenIDToken issues an OpenID token proving to a third party that
// the requester is userID (only for themselves).
func (s *Service) RequestOpenIDToken(ctx context.Context, requester, userID id.UserID) (*OpenIDCredentials, error) {
	if requester != userID {
		return nil, mxhttp.Forbidden("Cannot request OpenID tokens for other users")
	}
	token := newToken("myoi_")
	now := s.now()
	if err := s.store.CreateOpenIDToken(ctx, hashToken(token), userID.String(), now.UnixMilli(),
		now.Add(OpenIDTokenLifetime).UnixMilli(), MaxOpenIDTokensPerUser); err != nil {
		return nil, err
	}
	return &OpenIDCredentials{AccessToken: token, TokenType: "Bearer", MatrixServerName: s.cfg.ServerName,
		ExpiresIn: int64(OpenIDTokenLifetime / time.Second)}, nil
}

// OpenIDUser is the user an OpenID token was issued to (GET
// /_matrix/federation/v1/openid/userinfo): 401 M_UNKNOWN_TOKEN when it is
// unknown, expired or its user deactivated.
func (s *Service) OpenIDUser(ctx context.Context, token string) (id.UserID, error) {
	userID, err := s.store.OpenIDTokenUser(ctx, hashToken(token), s.now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return "", mxhttp.UnknownToken("Access token unknown or expired")
	}
	if err != nil {
		return "", err
	}
	return id.UserID(userID), nil
}

// LoginToken redeems a login token (once) and opens a session.
func (s *Service) LoginToken(ctx context.Context, token, deviceID, displayName, ip string, withRefresh bool) (*Session, error) {
	userID, err := s.store.ConsumeLoginToken(ctx, hashToken(token), s.now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.Forbidden("Invalid or expired login token")
	}
	if err != nil {
		return nil, err
	}
	u, err := s.store.GetUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	if u.Deactivated {
		return nil, mxhttp.UserDeactivated("This account has been deactivated")
	}
	return s.NewSession(ctx, id.UserID(userID), deviceID, displayName, ip, withRefresh)
}

// Logout deletes the caller's device and its tokens.
func (s *Service) Logout(ctx context.Context, userID id.UserID, deviceID id.DeviceID) error {
	return s.DeleteDevices(ctx, userID, []id.DeviceID{deviceID})
}

// LogoutAll deletes every device of the user with its tokens.
func (s *Service) LogoutAll(ctx context.Context, userID id.UserID) error {
	deleted, err := s.store.DeleteOtherDevices(ctx, userID.String(), "")
	if err != nil {
		return err
	}
	s.fireDeviceDeleted(ctx, userID, deleted)
	return nil
}

var dummyHash = HashPassword("timing-equalizer")

var _ Store = (*storage.DB)(nil)
