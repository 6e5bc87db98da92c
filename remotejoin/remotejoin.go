// Package remotejoin joins local users to rooms hosted on other servers:
// remote-join orchestration in one place, for the client API's /join (and,
// later, accepting invites). For each candidate server it asks make_join,
// has the roomserver complete and sign the template, sends it with
// send_join, and hands the answer to the roomserver, which verifies every
// event (signatures, hashes, auth) before creating the room locally. The
// network is here; the roomserver stays network-free.
package remotejoin

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// Rooms is what a remote join needs of the writer (roomserver).
type Rooms interface {
	SignJoin(roomID id.RoomID, version id.RoomVersion, template []byte, user id.UserID) ([]byte, id.EventID, error)
	ImportJoin(ctx context.Context, roomID id.RoomID, version id.RoomVersion, state, authChain []json.RawMessage, join []byte) error
	// A known room no local user is joined to any more (rejoin.go).
	RejoinServers(ctx context.Context, roomID id.RoomID) ([]string, bool, error)
	ImportRejoin(ctx context.Context, roomID id.RoomID, version id.RoomVersion, state, authChain []json.RawMessage, join []byte) error
}

// Client is the federation client's join handshake (mautrix's federation.Client).
type Client interface {
	MakeJoin(ctx context.Context, req *mfed.ReqMakeJoin) (*mfed.RespMakeJoin, error)
	SendJoin(ctx context.Context, req *mfed.ReqSendJoin) (*mfed.RespSendJoin, error)
}

// MaxCandidates bounds how many servers one join tries.
const MaxCandidates = 10

// Options are what the joiner is built from.
type Options struct {
	ServerName string
	Rooms      Rooms
	Client     Client

	// Outbound invites (invite.go, NewInviter).
	Invites      InviteRooms
	InviteClient InviteClient
	Policy       ServerPolicy // nil: every server

	// Out-of-band memberships (leave.go, knock.go): the writer's side and
	// the client's leave and knock handshakes; nil: not served.
	OutOfBand   OutOfBandRooms
	Memberships MembershipClient
	// Residents: joining a room we are in through another resident
	// (resident.go); nil: not done.
	Residents ResidentRooms
	// Residency is the data-localization policy (residency.go): the servers
	// a join, knock or invite would talk to must be admitted by the room's
	// zone. nil: not asked.
	Residency Residency
}

// Joiner joins rooms over federation.
type Joiner struct {
	serverName string
	rooms      Rooms
	client     Client
	versions   []id.RoomVersion
	oob        OutOfBandRooms
	members    MembershipClient
	residents  ResidentRooms
	res        Residency
}

// New builds a joiner.
func New(o Options) *Joiner {
	var versions []id.RoomVersion
	for _, v := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		if roomserver.SupportedRoomVersion(v) {
			versions = append(versions, id.RoomVersion(v))
		}
	}
	return &Joiner{serverName: o.ServerName, rooms: o.Rooms, client: o.Client, versions: versions, oob: o.OutOfBand, members: o.Memberships,
		residents: o.Residents, res: o.Residency}
}

// Candidates are the servers to try for roomID: the ones given (server_name,
// via, an alias's servers) in order, then the room ID's own domain (room IDs
// of versions up to 11 carry their creator's server), without our own name,
// duplicates or names outside the grammar; at most MaxCandidates.
func (j *Joiner) Candidates(roomID id.RoomID, given []string) []string {
	var out []string
	add := func(s string) {
		if s == "" || s == j.serverName || slices.Contains(out, s) || len(out) >= MaxCandidates || len(s) > 255 {
			return
		}
		out = append(out, s)
	}
	for _, s := range given {
		add(s)
	}
	if _, server, ok := cutServer(string(roomID)); ok {
		add(server)
	}
	return out
}

// joinCandidates are the servers a join tries: the inviter's (an
// out-of-band invite) and the ones the client named (server_name, via, an
// alias's servers), with the invite's stripped state senders; only when the
// client named none, the servers still in the room as we last knew it
// (known) and the room ID's domain. As Synapse: a join through named
// servers that all refuse fails, it does not fall over to a server the
// client did not name (Complement's TestRestrictedRoomsRemoteJoinFailOver:
// a resident that cannot authorise a restricted join must fail it).
func (j *Joiner) joinCandidates(ctx context.Context, user id.UserID, roomID id.RoomID, servers, known []string) []string {
	given := j.inviterFirst(ctx, user, roomID, servers)
	if len(servers) > 0 {
		return j.Candidates("", given) // "": no room ID domain
	}
	return j.Candidates(roomID, append(given, known...))
}

func cutServer(roomID string) (string, string, bool) {
	for i := 0; i < len(roomID); i++ {
		if roomID[i] == ':' {
			return roomID[:i], roomID[i+1:], true
		}
	}
	return roomID, "", false
}

// Join joins user to roomID through the first candidate server that lets
// it in. A room refused by every server is the last refusal (a
// roomserver.Error kind: M_FORBIDDEN from a server that answered 403, else
// not found).
func (j *Joiner) Join(ctx context.Context, user id.UserID, roomID id.RoomID, servers []string) error {
	known, rejoin, err := j.rooms.RejoinServers(ctx, roomID)
	if err != nil {
		return err
	}
	candidates := j.joinCandidates(ctx, user, roomID, servers, known)
	if len(candidates) == 0 {
		return roomserver.NotFound("No known servers for this room")
	}
	if _, candidates, err = j.admitCandidates(ctx, roomID, candidates, "join"); err != nil {
		return err
	}
	var last error
	for _, server := range candidates {
		err := j.joinVia(ctx, user, roomID, server, rejoin)
		if err == nil {
			return nil
		}
		if errors.Is(err, roomserver.ErrConflict) {
			return nil // joined meanwhile through another request
		}
		slog.Info("remotejoin: join failed", "room", roomID, "server", server, "err", err)
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	var rErr *roomserver.Error
	if errors.As(last, &rErr) {
		return last
	}
	switch errcodeOf(last) {
	case "M_UNABLE_TO_AUTHORISE_JOIN":
		return roomserver.NewError(roomserver.ErrUnableToAuthoriseJoin, "No server could authorise this join: %v", last)
	case "M_UNABLE_TO_GRANT_JOIN":
		return roomserver.Forbidden("No server could grant this join: %v", last)
	}
	if statusOf(last) == 403 {
		return roomserver.Forbidden("Joining the room was refused: %v", last)
	}
	return roomserver.NotFound("No server could join this room: %v", last)
}

func (j *Joiner) joinVia(ctx context.Context, user id.UserID, roomID id.RoomID, server string, rejoin bool) error {
	mj, err := j.client.MakeJoin(ctx, &mfed.ReqMakeJoin{RoomID: roomID, UserID: user, Via: server, SupportedVersions: j.versions})
	if err != nil {
		return fmt.Errorf("make_join via %s: %w", server, err)
	}
	version := mj.RoomVersion
	if version == "" {
		version = "1"
	}
	if !slices.Contains(j.versions, version) {
		return roomserver.NewError(roomserver.ErrUnsupportedRoomVersion, "Room version %q is not supported", version)
	}
	join, eventID, err := j.rooms.SignJoin(roomID, version, mj.Event, user)
	if err != nil {
		return err
	}
	sj, err := j.client.SendJoin(ctx, &mfed.ReqSendJoin{RoomID: roomID, EventID: eventID, Event: join, Via: server})
	if err != nil {
		return fmt.Errorf("send_join via %s: %w", server, err)
	}
	if sj.MembersOmitted {
		return fmt.Errorf("send_join via %s: members omitted though not asked to", server)
	}
	// The resident server may have co-signed our join (a restricted join):
	// take its copy when it is the same event.
	if len(sj.Event) > 0 && version.EventIDFormat() != id.EventIDFormatCustom {
		var p pdu.PDU
		if jsonv2.Unmarshal(sj.Event, &p) == nil {
			if got, err := p.GetEventID(version); err == nil && got == eventID {
				join = sj.Event
			}
		}
	}
	// Keys of members' servers that cannot be reached are asked of the
	// server we join through, as a notary for this import.
	ctx = roomserver.WithKeyNotary(ctx, server)
	j.afterJoin(ctx, roomID, sj.State)
	if rejoin {
		return j.rooms.ImportRejoin(ctx, roomID, version, sj.State, sj.AuthChain, join)
	}
	return j.rooms.ImportJoin(ctx, roomID, version, sj.State, sj.AuthChain, join)
}

// statusOf is the HTTP status of a federation client error (0 if none).
func statusOf(err error) int {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode
	}
	return 0
}

// errcodeOf is the Matrix errcode of a federation client error ("" if none).
func errcodeOf(err error) string {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.RespError != nil {
		return httpErr.RespError.ErrCode
	}
	return ""
}

// MustJoinRemotely tells the client API that a join of roomID, though the
// room is known here, must go over federation (Join): no local user is
// joined to it any more and other servers are in it (RejoinServers).
func (j *Joiner) MustJoinRemotely(ctx context.Context, roomID id.RoomID) bool {
	_, rejoin, err := j.rooms.RejoinServers(ctx, roomID)
	if err != nil {
		slog.Warn("remotejoin: reading the room's servers", "room", roomID, "err", err)
	}
	return rejoin
}

// HoldsOutOfBand tells whether user's latest membership of roomID is an
// out-of-band invite or knock (roomserver.OutOfBand): also of a known room
// this server stopped following, whose leave must go through a resident.
func (j *Joiner) HoldsOutOfBand(ctx context.Context, user id.UserID, roomID id.RoomID) bool {
	if j.oob == nil {
		return false
	}
	o, err := j.oob.OutOfBand(ctx, user, roomID)
	return err == nil && (o.Membership == "invite" || o.Membership == "knock")
}
