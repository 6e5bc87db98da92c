package mediaapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/storage"
)

// Media under the data-localization policy (residency). With the policy on:
//
//   - Our media is served to another server (the federation endpoints,
//     federation.go) only when the server's zone shares media
//     (Server(origin, Media)) and some room whose events reference the item
//     (the mxc reference record, references.go) admits the server for media
//     (Room(room, origin, Media)). An item no room references — uploaded and
//     never shared — goes nowhere. A profile avatar is referenced by the
//     user's m.room.member events, so it reaches the servers of the rooms the
//     user is in, no more. An attachment shared inside encrypted events is
//     referenced where no server can read: an item no readable reference
//     admits is served to a server that shares an encrypted room with its
//     uploader, when that room's zone admits the server (encryptedShare).
//   - Another server's media is fetched (and served from our cache) only
//     when its zone shares media (Server(server, Media)); else nothing is
//     requested of it.
//
// Each refusal is a 403 M_FORBIDDEN carrying the decision's reason, and an
// audit refusal record; each item served to or fetched from another server
// an audit flow record (data kind media, its bytes). With the policy off the
// record is not consulted and media flows as it always did.

// Residency is the data-localization policy as mediaapi asks it
// (residency.Policy).
type Residency interface {
	Server(ctx context.Context, server string, kind residency.Kind) residency.Decision
	Room(ctx context.Context, roomID, server string, kind residency.Kind) residency.Decision
}

// Audit records media crossing the boundary and the policy's refusals
// (filled by the homeserver over audit.Log).
type Audit interface {
	// MediaFlow: the item uri (bytes long) went to server (outbound) or
	// came from it (inbound).
	MediaFlow(direction, server, uri string, bytes int64)
	// MediaRefusal: d kept the item uri from server, or us from server's
	// media; purpose names the endpoint, room the room decided on ("" for none).
	MediaRefusal(d residency.Decision, direction, server, purpose, uri, room string)
}

// Directions of a flow or refusal, as the audit trail spells them.
const (
	Outbound = "outbound"
	Inbound  = "inbound"
)

// Purposes of refusal records.
const (
	purposeServe = "media.serve" // /_matrix/federation/v1/media/download, /thumbnail
	purposeFetch = "media.fetch" // fetching another server's media for our clients
)

// allowServe decides whether our item mediaID may be served to origin.
func (s *Service) allowServe(ctx context.Context, origin, mediaID string) error {
	uri := "mxc://" + s.serverName + "/" + mediaID
	if s.residency == nil {
		return nil
	}
	d := s.residency.Server(ctx, origin, residency.Media)
	if d.Rule == residency.RuleDisabled {
		return nil
	}
	if !d.Allowed {
		return s.refuse(d, Outbound, origin, purposeServe, uri, "")
	}
	rooms, err := s.referencingRooms(ctx, uri)
	if err != nil {
		return fmt.Errorf("reading the rooms referencing %s: %w", uri, err)
	}
	var first residency.Decision
	for i, room := range rooms {
		rd := s.residency.Room(ctx, room, origin, residency.Media)
		if rd.Allowed {
			return nil
		}
		if i == 0 {
			first = rd
		}
	}
	if ok, err := s.encryptedShare(ctx, origin, mediaID); err != nil || ok {
		return err
	}
	if len(rooms) == 0 {
		d.Allowed, d.Rule = false, "residency.media.unreferenced"
		d.Reason = fmt.Sprintf("%s is not referenced in any room %s may see; media is served to another server only once shared in a room of a zone it is admitted to",
			uri, origin)
		return s.refuse(d, Outbound, origin, purposeServe, uri, "")
	}
	if len(rooms) > 1 {
		first.Reason = fmt.Sprintf("%s is referenced only in rooms %s may not see (%d rooms; the first: %s)",
			uri, origin, len(rooms), first.Reason)
	}
	return s.refuse(first, Outbound, origin, purposeServe, uri, rooms[0])
}

// maxEncryptedRooms bounds the uploader's encrypted rooms looked at.
const maxEncryptedRooms = 50

// encryptedShare reports whether the uploader of our item mediaID shares an
// encrypted room with origin whose zone admits origin for media: the room
// the attachment may have been sent to, inside events the server cannot read.
func (s *Service) encryptedShare(ctx context.Context, origin, mediaID string) (bool, error) {
	m, err := s.store.GetMedia(ctx, s.serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", mediaID, err)
	}
	if m.Uploader == "" {
		return false, nil
	}
	rooms, err := s.store.EncryptedRoomsShared(ctx, m.Uploader, origin, maxEncryptedRooms)
	if err != nil {
		return false, err
	}
	for _, room := range rooms {
		if s.residency.Room(ctx, room, origin, residency.Media).Allowed {
			return true, nil
		}
	}
	return false, nil
}

// allowFetch decides whether another server's media may be fetched from it
// (or served from our cache of it).
func (s *Service) allowFetch(ctx context.Context, server, mediaID string) error {
	if s.residency == nil {
		return nil
	}
	d := s.residency.Server(ctx, server, residency.Media)
	if d.Allowed {
		return nil
	}
	return s.refuse(d, Inbound, server, purposeFetch, "mxc://"+server+"/"+mediaID, "")
}

// refuse records a refusal and returns its 403.
func (s *Service) refuse(d residency.Decision, direction, server, purpose, uri, room string) error {
	if s.audit != nil {
		s.audit.MediaRefusal(d, direction, server, purpose, uri, room)
	}
	reason := d.Reason
	if reason == "" {
		reason = "The data-localization policy does not let this media cross to or from " + server
	}
	return mxhttp.Forbidden("%s", reason)
}

// flow records an item served to or fetched from another server.
func (s *Service) flow(direction, server, uri string, bytes int64) {
	if s.audit != nil {
		s.audit.MediaFlow(direction, server, uri, bytes)
	}
}
