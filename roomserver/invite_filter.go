package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// Invite filtering (MSC4155, unstable): a user's global account data
// org.matrix.msc4155.invite_permission_config lists globs of users and
// servers whose invites they allow, ignore or block. The first list that
// matches the inviter decides, in this order: allowed_users, ignored_users,
// blocked_users, allowed_servers, ignored_servers, blocked_servers; no match
// allows. A blocked invite is refused (403); an ignored one is dropped
// without telling the inviter. Only invites to local users made here are
// filtered (invites over federation come with it).

// InviteFilterType is the account data type of a user's invite filter.
const InviteFilterType = "org.matrix.msc4155.invite_permission_config"

// errInviteBlocked answers an invite the invitee blocks.
var errInviteBlocked = &Error{Kind: ErrInviteBlocked, Message: "This user does not accept invites from you"}

type inviteRule int

const (
	inviteAllow inviteRule = iota
	inviteIgnore
	inviteBlock
)

// maxInviteGlobs bounds the globs read from one list: account data is the
// user's own, but each invite compiles them.
const maxInviteGlobs = 500

// inviteRuleFor returns what target's invite filter says of an invite from inviter.
func (s *Server) inviteRuleFor(ctx context.Context, inviter, target id.UserID) (inviteRule, error) {
	if !s.isLocal(target) {
		return inviteAllow, nil
	}
	raw, err := s.db.GetAccountData(ctx, string(target), "", InviteFilterType)
	if errors.Is(err, storage.ErrNotFound) {
		return inviteAllow, nil
	}
	if err != nil {
		return inviteAllow, fmt.Errorf("reading the invite filter of %s: %w", target, err)
	}
	var cfg map[string]json.RawMessage
	if json.Unmarshal(raw, &cfg) != nil {
		return inviteAllow, nil // not an object: no filter
	}
	server := inviter.Homeserver()
	for _, r := range []struct {
		list, subject string
		rule          inviteRule
	}{
		{"allowed_users", string(inviter), inviteAllow},
		{"ignored_users", string(inviter), inviteIgnore},
		{"blocked_users", string(inviter), inviteBlock},
		{"allowed_servers", server, inviteAllow},
		{"ignored_servers", server, inviteIgnore},
		{"blocked_servers", server, inviteBlock},
	} {
		if anyGlobMatches(cfg[r.list], r.subject) {
			return r.rule, nil
		}
	}
	return inviteAllow, nil
}

// anyGlobMatches reports whether a JSON list of globs has one matching s.
// A missing or null list, and entries that are not strings, match nothing.
func anyGlobMatches(list json.RawMessage, s string) bool {
	var globs []any
	if json.Unmarshal(list, &globs) != nil {
		return false
	}
	for i, g := range globs {
		if i == maxInviteGlobs {
			break
		}
		if p, ok := g.(string); ok && globMatch(p, s) {
			return true
		}
	}
	return false
}

// globMatch matches s against a glob: * any run of characters, ? one
// character, case-insensitively (as Synapse's glob_to_regex).
func globMatch(glob, s string) bool {
	var b strings.Builder
	b.WriteString("(?is)^")
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	return err == nil && re.MatchString(s)
}

// filterInvitees drops from a createRoom invite list the users whose invite
// filter ignores or blocks sender: the room is still created, without their
// invites (as MSC4380 lets a server handle a refused createRoom invite).
func (s *Server) filterInvitees(ctx context.Context, sender id.UserID, invitees []id.UserID) ([]id.UserID, error) {
	var out []id.UserID
	for _, u := range invitees {
		rule, err := s.inviteRuleFor(ctx, sender, u)
		if err != nil {
			return nil, err
		}
		if rule == inviteAllow {
			out = append(out, u)
		}
	}
	return out, nil
}
