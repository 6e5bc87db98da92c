package homeserver

import (
	"context"
	"strings"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/internal/follower"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/storage"
)

// mediaAudit is the audit trail as mediaapi records to it: a flow per media
// item served to or fetched from another server, a refusal per refusal
// (the same one once a minute: peerRefusals).
type mediaAudit struct {
	log        *audit.Log
	serverName string
	refusals   peerRefusals // the same refusal once a minute
}

func (a mediaAudit) MediaFlow(direction, server, uri string, bytes int64) {
	actor := a.serverName // outbound: we sent it
	if direction == audit.Inbound {
		actor = server
	}
	a.log.Flow(actor, audit.Flow{Direction: direction, Server: server, Media: uri, Bytes: int(bytes),
		Data: map[string]int{audit.DataMedia: 1}})
}

func (a mediaAudit) MediaRefusal(d residency.Decision, direction, server, purpose, uri, room string) {
	r := audit.ResidencyRefusal(d, direction, server, purpose, residency.Media, room)
	if !strings.Contains(r.Reason, uri) { // the record names the item
		r.Reason = uri + ": " + r.Reason
	}
	a.refusals.Refusal(a.serverName, r)
}

// startMediaRefsFollower starts the follower that fills the mxc reference
// record (mediaapi.RecordReferences). It runs with federation off too (the
// record serves retention as well), and the first time from position 0: a
// backfill of every stored event, a page at a time.
func (s *Server) startMediaRefsFollower(ctx context.Context) error {
	f, err := follower.Start(ctx, follower.Options{Name: storage.MediaRefsFollower, Store: s.DB, Stream: s.DB.Stream,
		Handle: s.Media.RecordReferences, PageSize: 500, FromStart: true})
	if err != nil {
		return err
	}
	s.Followers = append(s.Followers, f)
	return nil
}
