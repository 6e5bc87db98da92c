package roomserver

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/id"
)

// A client's m.room.member state event (PUT /rooms/{roomId}/state/m.room.member/{userId})
// is the membership change it names, made as the matching endpoint makes it
// (as Synapse does): a state PUT must not reach what /join, /invite, /kick,
// /ban, /unban, /leave and /knock refuse. This server signs every local event,
// so content the auth rules accept on the strength of a signature is only as
// good as the path that built it.

// errRedactionState refuses a state event of type m.room.redaction: from
// room v11 its target is in content, and as state it would skip the power
// check /redact makes.
var errRedactionState = InvalidParam("m.room.redaction is not a state event; use /redact")

// serverVouchedMemberKeys are member content keys a client cannot set.
//
//   - join_authorised_via_users_server: the auth rules admit a restricted
//     join when the named user's server signed it; only the join path that
//     checked the allow list may name one. A client's is dropped rather than
//     refused, as Synapse does, because clients echo the whole member content
//     back when changing a per-room profile.
//   - third_party_invite: claims an identity server's signed invite, which
//     only a third-party invite exchange would have checked; this server has
//     none, so one is refused.
const (
	keyAuthorisedVia    = "join_authorised_via_users_server"
	keyThirdPartyInvite = "third_party_invite"
)

// sendMember applies a client's member state event for r.Sender.
func (s *Server) sendMember(ctx context.Context, r SendRequest) (id.EventID, error) {
	target := id.UserID(*r.StateKey)
	if !ValidUserID(string(target)) {
		return "", InvalidParam("The state key of m.room.member must be a user ID")
	}
	membership, extra, err := clientMemberContent(r.Content)
	if err != nil {
		return "", err
	}
	self := target == r.Sender
	var mk maker
	switch membership {
	case "join", "knock":
		if !self {
			return "", Forbidden("You cannot %s on behalf of another user", membership)
		}
		if membership == "join" {
			mk, err = s.joinMaker(ctx, r.Sender, "", extra, true)
		} else {
			mk, err = s.knockMaker(ctx, r.Sender, "", extra)
		}
	default:
		a := MembershipAction{Sender: r.Sender, RoomID: r.RoomID, Target: target, Action: membership}
		if membership == "leave" && !self {
			a.Action = actionRemove
		}
		if err := s.checkMembershipAction(ctx, a); err != nil {
			return "", err
		}
		mk, err = s.membershipMaker(ctx, a, extra)
	}
	if err != nil {
		return "", err
	}
	var unchanged id.EventID
	ev, err := s.submitMember(ctx, r.RoomID, unlessUnchanged(mk, r.Sender, target, &unchanged))
	if errors.Is(err, errSkip) && unchanged != "" {
		return unchanged, nil
	}
	if errors.Is(err, errSkip) {
		return "", Forbidden("%s has no membership to change", target)
	}
	if err != nil {
		return "", err
	}
	return ev.ID, nil
}

// unlessUnchanged wraps a member maker so that an event identical to the
// current one, from the same sender, is not sent again: its ID is kept in
// *unchanged instead (as for other state). A change with nothing to do also
// answers with the current event.
func unlessUnchanged(mk maker, sender, target id.UserID, unchanged *id.EventID) maker {
	return func(rs *roomState) (*proto, error) {
		cur := rs.get("m.room.member", string(target))
		p, err := mk(rs)
		if errors.Is(err, errSkip) && cur != nil {
			*unchanged = cur.ID
		}
		if err != nil {
			return nil, err
		}
		if cur != nil && cur.PDU.Sender == sender && sameContent(cur.PDU.Content, p.Content) {
			*unchanged = cur.ID
			return nil, errSkip
		}
		return p, nil
	}
}

// clientMemberContent splits a client's member content into its membership
// and the rest, without the keys only the server may set.
func clientMemberContent(content json.RawMessage) (string, map[string]any, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil {
		return "", nil, BadJSON("Member content must be a JSON object")
	}
	var membership string
	if err := json.Unmarshal(c["membership"], &membership); err != nil {
		return "", nil, BadJSON("content.membership must be a string")
	}
	switch membership {
	case "join", "knock", "invite", "leave", "ban":
	default:
		return "", nil, BadJSON("Unknown membership %q", membership)
	}
	extra, err := clientExtraContent(c)
	if err != nil {
		return "", nil, err
	}
	return membership, extra, nil
}

// clientExtraContent is the member content a client adds to the membership
// it asks for: every key but membership and those only the server may set.
func clientExtraContent(c map[string]json.RawMessage) (map[string]any, error) {
	if _, ok := c[keyThirdPartyInvite]; ok {
		return nil, Forbidden("Third-party invites are not supported")
	}
	extra := map[string]any{}
	for k, v := range c {
		if k != "membership" && k != keyAuthorisedVia {
			extra[k] = v
		}
	}
	return extra, nil
}
