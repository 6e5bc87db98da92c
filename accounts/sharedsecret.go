package accounts

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Shared-secret registration, compatible with Synapse's
// /_synapse/admin/v1/register (used by register_new_matrix_user and
// deployment tools): the client fetches a nonce, then posts the user with
// mac = HMAC-SHA1(shared_secret, nonce \0 username \0 password \0 "admin"|"notadmin").

// nonceLifetime is how long a nonce may be used (Synapse: 60 s).
const nonceLifetime = 60 * time.Second

type nonceStore struct {
	mu sync.Mutex
	m  map[string]time.Time // nonce -> issued
}

// SharedSecretEnabled reports whether registration.shared_secret is set.
func (s *Service) SharedSecretEnabled() bool { return s.cfg.Register.SharedSecret != "" }

// NewRegistrationNonce issues a single-use nonce.
func (s *Service) NewRegistrationNonce() string {
	nonce := hex.EncodeToString([]byte(randomString(24)))
	now := s.now()
	s.nonces.mu.Lock()
	defer s.nonces.mu.Unlock()
	for n, issued := range s.nonces.m { // sweep expired nonces
		if now.Sub(issued) > nonceLifetime {
			delete(s.nonces.m, n)
		}
	}
	s.nonces.m[nonce] = now
	return nonce
}

// takeNonce consumes a nonce; false when unknown, used or expired.
func (s *Service) takeNonce(nonce string) bool {
	s.nonces.mu.Lock()
	defer s.nonces.mu.Unlock()
	issued, ok := s.nonces.m[nonce]
	delete(s.nonces.m, nonce)
	return ok && s.now().Sub(issued) <= nonceLifetime
}

// SharedSecretMAC computes the registration MAC (hex) the way Synapse does.
// userType is appended when not empty.
func SharedSecretMAC(secret, nonce, username, password string, admin bool, userType string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(nonce))
	mac.Write([]byte{0})
	mac.Write([]byte(username))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	mac.Write([]byte{0})
	if admin {
		mac.Write([]byte("admin"))
	} else {
		mac.Write([]byte("notadmin"))
	}
	if userType != "" {
		mac.Write([]byte{0})
		mac.Write([]byte(userType))
	}
	return hex.EncodeToString(mac.Sum(nil))
}

// SharedSecretRequest is the body of POST /_synapse/admin/v1/register.
type SharedSecretRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	DisplayName string `json:"displayname"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	MAC         string `json:"mac"`
}

// RegisterWithSharedSecret verifies the nonce and MAC and creates the user,
// logged in on a new device.
func (s *Service) RegisterWithSharedSecret(ctx context.Context, req SharedSecretRequest, ip string) (*Session, error) {
	if !s.SharedSecretEnabled() {
		return nil, mxhttp.Unrecognized("Shared secret registration is not enabled")
	}
	switch {
	case req.Nonce == "":
		return nil, mxhttp.MissingParam("nonce must be specified")
	case req.Username == "" || strings.ContainsRune(req.Username, 0) || len(req.Username) > 512:
		return nil, mxhttp.InvalidParam("Invalid username")
	case req.Password == "" || strings.ContainsRune(req.Password, 0) || len(req.Password) > 512:
		return nil, mxhttp.InvalidParam("Invalid password")
	case req.MAC == "":
		return nil, mxhttp.MissingParam("mac must be specified")
	case req.UserType != "" && req.UserType != "bot" && req.UserType != "support":
		return nil, mxhttp.InvalidParam("Invalid user type")
	}
	if !s.takeNonce(req.Nonce) {
		return nil, mxhttp.Unknown("Unrecognised nonce")
	}
	want := SharedSecretMAC(s.cfg.Register.SharedSecret, req.Nonce, req.Username, req.Password, req.Admin, req.UserType)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(req.MAC))) {
		return nil, mxhttp.Forbidden("HMAC incorrect")
	}
	userID, err := s.CreateUser(ctx, strings.ToLower(req.Username), req.Password, req.Admin)
	if err != nil {
		return nil, err
	}
	if req.DisplayName != "" {
		if err := s.store.SetDisplayName(ctx, userID.String(), req.DisplayName); err != nil {
			return nil, err
		}
	}
	return s.NewSession(ctx, userID, "", "", ip, false)
}
