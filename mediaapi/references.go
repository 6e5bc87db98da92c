package mediaapi

import (
	"bytes"
	"context"
	"regexp"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/storage"
)

// The mxc reference record: which rooms' events name which mxc:// URIs
// (storage/media_refs.go). A follower of the stream (RecordReferences,
// started by the homeserver under storage.MediaRefsFollower, from position 0
// the first time: a backfill) fills it from every room event, local or
// remote, state or not. Data localization asks it before serving our media to
// another server (residency.go); retention before deleting media a purged
// event named.
//
// Only the fields clients render as media count: content.url,
// content.info.thumbnail_url, content.file.url and
// content.info.thumbnail_file.url (m.room.message attachments, m.sticker,
// m.room.avatar), content.avatar_url (m.room.member), <img src="mxc://...">
// in content.formatted_body, and the same in content["m.new_content"] (an
// edit). An m.room.encrypted event names nothing this server can read: an
// encrypted attachment is referenced only where unencrypted content names
// it (its file.url in an unencrypted room, a member's avatar).

// MaxReferencesPerEvent bounds the URIs recorded for one event.
const MaxReferencesPerEvent = 32

// maxFormattedBody bounds how much of a formatted_body is searched for <img>.
const maxFormattedBody = 64 << 10

var imgSrc = regexp.MustCompile(`(?i)<img\b[^>]*?\bsrc\s*=\s*["']?(mxc://[^"'\s>]{1,600})`)

// contentPaths are the referencing fields, under content (and m.new_content).
var contentPaths = []string{"url", "info.thumbnail_url", "file.url", "info.thumbnail_file.url", "avatar_url"}

// References returns the valid mxc:// URIs an event (its PDU JSON) names in
// a referencing field, deduplicated, at most MaxReferencesPerEvent.
func References(pdu []byte) []string {
	if !bytes.Contains(pdu, []byte("mxc://")) { // most events: nothing to parse
		return nil
	}
	var out []string
	add := func(uri string) {
		if len(out) >= MaxReferencesPerEvent || !ValidMXC(uri) {
			return
		}
		for _, u := range out {
			if u == uri {
				return
			}
		}
		out = append(out, uri)
	}
	content := gjson.GetBytes(pdu, "content")
	for _, c := range []gjson.Result{content, content.Get(`m\.new_content`)} {
		if !c.IsObject() {
			continue
		}
		for _, p := range contentPaths {
			if v := c.Get(p); v.Type == gjson.String {
				add(v.Str)
			}
		}
		if fb := c.Get("formatted_body"); fb.Type == gjson.String {
			body := fb.Str
			if len(body) > maxFormattedBody {
				body = body[:maxFormattedBody]
			}
			for _, m := range imgSrc.FindAllStringSubmatch(body, MaxReferencesPerEvent+1) {
				add(m[1])
			}
		}
	}
	return out
}

// ValidMXC reports whether uri is mxc://<server name>/<media ID> with a
// valid server name and media ID.
func ValidMXC(uri string) bool {
	rest, ok := strings.CutPrefix(uri, "mxc://")
	if !ok {
		return false
	}
	server, mediaID, ok := strings.Cut(rest, "/")
	return ok && ValidServerName(server) && ValidMediaID(mediaID)
}

// RecordReferences is the follower's handler: it records the references of
// a page of events. Idempotent (a reference already recorded is kept).
func (s *Service) RecordReferences(ctx context.Context, evs []*storage.Event) error {
	var refs []storage.MediaRef
	for _, e := range evs {
		for _, uri := range References(e.JSON) {
			refs = append(refs, storage.MediaRef{URI: uri, RoomID: e.RoomID, EventID: e.EventID, StreamPos: e.StreamPos})
		}
	}
	return s.store.InsertMediaRefs(ctx, refs)
}

// maxReferencingRooms bounds the rooms asked about for one media request.
const maxReferencingRooms = 64

// referencingRooms lists the rooms with an unredacted event referencing
// uri: the record, and the events past the follower's cursor, which it may
// not have recorded yet (so a media item shared a moment ago is found).
func (s *Service) referencingRooms(ctx context.Context, uri string) ([]string, error) {
	rooms, err := s.store.MediaRefRooms(ctx, uri, maxReferencingRooms)
	if err != nil {
		return nil, err
	}
	tail, err := s.store.MediaRefTail(ctx, uri, maxReferencingRooms)
	if err != nil {
		return nil, err
	}
	for _, c := range tail {
		for _, u := range References(c.JSON) {
			if u == uri && !contains(rooms, c.RoomID) {
				rooms = append(rooms, c.RoomID)
				break
			}
		}
	}
	return rooms, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
