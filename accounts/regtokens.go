package accounts

import (
	"context"
	"crypto/subtle"
	"fmt"
	"regexp"
	"slices"

	"github.com/myelin-chat/myelin/storage"
)

// registrationTokenRE is the spec's token grammar: 1-64 characters from the
// unreserved URI set.
var registrationTokenRE = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

// configToken reports whether token is one of registration.tokens, comparing
// against every configured token in constant time.
func (s *Service) configToken(token string) bool {
	found := 0
	for _, t := range s.cfg.Register.Tokens {
		found |= subtle.ConstantTimeCompare([]byte(t), []byte(token))
	}
	return found == 1
}

// RegistrationTokenValid answers GET /register/m.login.registration_token/validity.
// It does not reserve a use.
func (s *Service) RegistrationTokenValid(ctx context.Context, token string) (bool, error) {
	if !registrationTokenRE.MatchString(token) {
		return false, nil
	}
	if s.configToken(token) {
		return true, nil
	}
	return s.store.RegistrationTokenUsable(ctx, token, s.now().UnixMilli())
}

// reserveRegistrationToken completes the m.login.registration_token stage of
// sess: configured tokens are unlimited; a stored token gets a pending use,
// which SettleRegistration completes or releases once the session is claimed
// (or session expiry releases).
func (s *Service) reserveRegistrationToken(ctx context.Context, sess *storage.UIASession, token string) (bool, error) {
	if !registrationTokenRE.MatchString(token) {
		return false, nil
	}
	completed := append(slices.Clone(sess.Completed), StageRegistrationToken)
	if s.configToken(token) {
		if err := s.store.CompleteUIAStage(ctx, sess.SessionID, completed); err != nil {
			return false, fmt.Errorf("recording UIA stage: %w", err)
		}
		return true, nil
	}
	ok, err := s.store.ReserveRegistrationToken(ctx, sess.SessionID, token, completed, s.now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("reserving registration token: %w", err)
	}
	if ok {
		sess.RegistrationToken = token
	}
	return ok, nil
}

// ValidRegistrationTokenSyntax reports whether token follows the spec's grammar.
func ValidRegistrationTokenSyntax(token string) bool { return registrationTokenRE.MatchString(token) }
