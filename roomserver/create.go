package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// InitialStateEvent is one entry of createRoom's initial_state.
type InitialStateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// Bounds of a createRoom request (400 M_INVALID_PARAM beyond them).
const (
	MaxCreateInvites      = 100
	MaxCreateInitialState = 200
)

// CreateRoomRequest is the body of POST /createRoom.
type CreateRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             string                     `json:"room_alias_name"`
	Name                      string                     `json:"name"`
	Topic                     string                     `json:"topic"`
	Invite                    []string                   `json:"invite"`
	RoomVersion               string                     `json:"room_version"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	InitialState              []InitialStateEvent        `json:"initial_state"`
	Preset                    string                     `json:"preset"`
	IsDirect                  bool                       `json:"is_direct"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override"`

	// ServerState is state the server adds after initial_state (never read
	// from the client's JSON), so the client cannot override it at creation:
	// the client API puts the residency policy's m.room.server_acl here.
	ServerState []InitialStateEvent `json:"-"`

	// Set by room upgrades: the old room to link, and state to carry over.
	predecessor *predecessor
	carried     []InitialStateEvent
}

type predecessor struct {
	roomID  id.RoomID
	eventID id.EventID
}

// SupportedRoomVersion reports whether this server can create rooms of v.
func SupportedRoomVersion(v string) bool {
	switch v {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12":
		return true
	}
	return false
}

func stateKeyPtr(s string) *string { return &s }

// MustJSON marshals a value that always marshals (the maps, strings and
// numbers event content is built from); a failure is a bug, so it panics.
// Also for roomview and directory.
func MustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// CreateRoom creates a room as POST /createRoom describes and returns its ID.
func (s *Server) CreateRoom(ctx context.Context, sender id.UserID, req *CreateRoomRequest) (id.RoomID, error) {
	version := req.RoomVersion
	if version == "" {
		version = s.cfg.Rooms.DefaultVersion
	}
	if !SupportedRoomVersion(version) {
		return "", NewError(ErrUnsupportedRoomVersion, "Room version %q is not supported", version)
	}
	rv := id.RoomVersion(version)
	if err := req.checkEventJSON(); err != nil {
		return "", err
	}
	preset := req.Preset
	switch preset {
	case "":
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	case "private_chat", "public_chat", "trusted_private_chat":
	default:
		return "", BadJSON("Unknown preset %q", req.Preset)
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return "", BadJSON("Unknown visibility %q", req.Visibility)
	}
	// Each invite and initial_state entry is an event (and a state snapshot)
	// written in the request: bounded.
	if len(req.Invite) > MaxCreateInvites {
		return "", InvalidParam("At most %d users can be invited when creating a room", MaxCreateInvites)
	}
	if len(req.InitialState) > MaxCreateInitialState {
		return "", InvalidParam("At most %d initial_state events are accepted when creating a room", MaxCreateInitialState)
	}
	var invitees []id.UserID
	for _, u := range req.Invite {
		if !ValidUserID(u) {
			return "", InvalidParam("Invalid user ID %q in invite", u)
		}
		if id.UserID(u) != sender {
			invitees = append(invitees, id.UserID(u))
		}
	}
	invitees, err := s.filterInvitees(ctx, sender, invitees)
	if err != nil {
		return "", err
	}
	var alias string
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + s.serverName
		if !ValidAlias(alias) {
			return "", InvalidParam("Invalid room_alias_name")
		}
		if _, _, err := s.db.ResolveAlias(ctx, alias); err == nil {
			return "", NewError(ErrRoomInUse, "Room alias already taken")
		} else if !errors.Is(err, storage.ErrNotFound) {
			return "", err
		}
	}
	for _, st := range req.InitialState {
		if !ValidEventType(st.Type) || len(st.StateKey) > MaxFieldBytes {
			return "", BadJSON("Invalid initial_state entry")
		}
		switch st.Type {
		case "m.room.create", "m.room.member", "m.room.redaction":
			// Built by the request itself or through the membership
			// endpoints' checks (member_state.go); a redaction is no state.
			return "", InvalidParam("initial_state cannot contain %s events", st.Type)
		}
		if st.Type == "m.room.power_levels" {
			if err := validatePowerLevels(rv, st.Content); err != nil {
				return "", err
			}
		}
	}

	// The create event.
	createContent := map[string]json.RawMessage{}
	for k, v := range req.CreationContent {
		createContent[k] = v
	}
	createContent["room_version"] = MustJSON(version)
	if rv.CreatorInContent() {
		createContent["creator"] = MustJSON(sender)
	} else {
		delete(createContent, "creator")
	}
	if req.predecessor != nil {
		pred := map[string]string{"room_id": string(req.predecessor.roomID)}
		if !rv.RoomIDIsCreateEventID() {
			pred["event_id"] = string(req.predecessor.eventID)
		}
		createContent["predecessor"] = MustJSON(pred)
	}
	var additionalCreators []id.UserID
	if rv.PrivilegedRoomCreators() {
		if raw, ok := createContent["additional_creators"]; ok {
			var list []string
			if err := json.Unmarshal(raw, &list); err != nil {
				return "", BadJSON("additional_creators must be a list of user IDs")
			}
			for _, u := range list {
				if !ValidUserID(u) {
					return "", BadJSON("Invalid user ID %q in additional_creators", u)
				}
				additionalCreators = append(additionalCreators, id.UserID(u))
			}
		}
		if preset == "trusted_private_chat" {
			additionalCreators = append(additionalCreators, invitees...)
		}
		additionalCreators = uniqueUsers(additionalCreators)
		if len(additionalCreators) > 0 {
			createContent["additional_creators"] = MustJSON(additionalCreators)
		}
	}
	rawCreate, err := json.Marshal(createContent)
	if err != nil {
		return "", BadJSON("Invalid creation_content")
	}
	var roomID id.RoomID
	if !rv.RoomIDIsCreateEventID() {
		roomID = id.RoomID("!" + randomString(18) + ":" + s.serverName)
	}
	createEv, err := s.buildEvent(rv, roomID, &proto{Type: "m.room.create", StateKey: stateKeyPtr(""), Sender: sender, Content: rawCreate},
		nil, nil, 1, time.Now().UnixMilli())
	if err != nil {
		return "", err
	}
	if err := checkSize(createEv); err != nil {
		return "", err
	}
	roomID = createEv.RoomID

	// Power levels: defaults, preset changes, then the client's override.
	// From v12, sending m.room.tombstone (upgrading) needs more than the
	// default admin level 100: the creators' alone by default (MSC4289).
	tombstoneLevel := 100
	if rv.PrivilegedRoomCreators() {
		tombstoneLevel = 150
	}
	users := map[string]int{}
	if !rv.PrivilegedRoomCreators() {
		users[string(sender)] = 100
		if preset == "trusted_private_chat" {
			for _, u := range invitees {
				users[string(u)] = 100
			}
		}
	}
	pl := map[string]json.RawMessage{
		"users":          MustJSON(users),
		"users_default":  MustJSON(0),
		"events_default": MustJSON(0),
		"state_default":  MustJSON(50),
		"ban":            MustJSON(50),
		"kick":           MustJSON(50),
		"redact":         MustJSON(50),
		"invite":         MustJSON(50), // public_chat; the private presets lower it (below)
		"events": MustJSON(map[string]int{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": tombstoneLevel,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		}),
		"notifications": MustJSON(map[string]int{"room": 50}),
	}
	if preset == "private_chat" || preset == "trusted_private_chat" {
		// As Synapse: members of a private room may invite, of a public one
		// only moderators (Complement's TestFederationRoomsInvite and
		// TestRestrictedRoomsRemoteJoinLocalUser rely on both).
		pl["invite"] = MustJSON(0)
	}
	for k, v := range req.PowerLevelContentOverride {
		pl[k] = v
	}
	rawPL, err := json.Marshal(pl)
	if err != nil {
		return "", BadJSON("Invalid power_level_content_override")
	}
	if err := validatePowerLevels(rv, rawPL); err != nil {
		return "", err
	}
	if rv.PrivilegedRoomCreators() {
		allCreators := append([]id.UserID{sender}, additionalCreators...)
		if err := checkCreatorsUnlisted(rawPL, allCreators); err != nil {
			return "", err
		}
		for _, st := range req.InitialState {
			if st.Type == "m.room.power_levels" && st.StateKey == "" {
				if err := checkCreatorsUnlisted(st.Content, allCreators); err != nil {
					return "", err
				}
			}
		}
	}

	// public_chat's guest_access "forbidden" is what an absent
	// m.room.guest_access means: no event is sent for it (as Synapse), so
	// the room's first events are the ones other servers expect
	// (Complement's TestInboundCanReturnMissingEvents counts them).
	joinRule, history, guest := "invite", "shared", "can_join"
	if preset == "public_chat" {
		joinRule, guest = "public", ""
	}

	state := func(evType, key string, content json.RawMessage) maker {
		return func(*roomState) (*proto, error) {
			return &proto{Type: evType, StateKey: stateKeyPtr(key), Sender: sender, Content: content}, nil
		}
	}
	joinContent, err := s.memberContent(ctx, sender, "join", "", nil)
	if err != nil {
		return "", err
	}
	makers := []maker{state("m.room.member", string(sender), joinContent), state("m.room.power_levels", "", rawPL)}
	if alias != "" {
		makers = append(makers, state("m.room.canonical_alias", "", MustJSON(map[string]string{"alias": alias})))
	}
	// Preset state unless initial_state sets the same keys.
	overridden := map[string]bool{}
	for _, st := range append(append(req.carried, req.InitialState...), req.ServerState...) {
		overridden[st.Type+"\x00"+st.StateKey] = true
	}
	for _, p := range []struct{ t, field, value string }{
		{"m.room.join_rules", "join_rule", joinRule},
		{"m.room.history_visibility", "history_visibility", history},
		{"m.room.guest_access", "guest_access", guest},
	} {
		if !overridden[p.t+"\x00"] && p.value != "" {
			makers = append(makers, state(p.t, "", MustJSON(map[string]string{p.field: p.value})))
		}
	}
	for _, st := range append(append(req.carried, req.InitialState...), req.ServerState...) {
		content := st.Content
		if len(content) == 0 {
			content = json.RawMessage("{}")
		}
		makers = append(makers, state(st.Type, st.StateKey, content))
	}
	if req.Name != "" {
		makers = append(makers, state("m.room.name", "", MustJSON(map[string]string{"name": req.Name})))
	}
	if req.Topic != "" {
		// The plain topic and its rich form (spec v1.15: m.topic is an
		// m.text content block of text representations).
		makers = append(makers, state("m.room.topic", "", MustJSON(map[string]any{
			"topic":   req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"body": req.Topic, "mimetype": "text/plain"}}},
		})))
	}
	for _, u := range invitees {
		makers = append(makers, s.inviteMaker(ctx, sender, u, "", req.IsDirect, nil))
	}
	if _, err := s.submit(ctx, roomID, &request{create: createEv, makers: makers}); err != nil {
		if errors.Is(err, context.Canceled) {
			return "", err
		}
		var rErr *Error
		if errors.As(err, &rErr) && rErr.Kind == ErrForbidden {
			// An initial event the auth rules refuse is bad input to createRoom
			// (the message, not %w: the answer is of one kind only).
			return "", InvalidParam("Cannot create room: %s", rErr.Message)
		}
		return "", err
	}
	if alias != "" {
		if err := s.db.CreateAlias(ctx, alias, string(roomID), string(sender)); err != nil && !errors.Is(err, storage.ErrAliasExists) {
			return roomID, err
		}
	}
	if req.Visibility == "public" {
		if err := s.db.SetRoomPublic(ctx, string(roomID), true); err != nil {
			return roomID, err
		}
	}
	return roomID, nil
}

// checkEventJSON refuses the client's JSON that would go into the room's
// events but could not be signed as canonical JSON (mxhttp.CheckEventJSON),
// before anything is built.
func (req *CreateRoomRequest) checkEventJSON() error {
	var parts []json.RawMessage
	for _, v := range req.CreationContent {
		parts = append(parts, v)
	}
	for _, v := range req.PowerLevelContentOverride {
		parts = append(parts, v)
	}
	for _, st := range req.InitialState {
		parts = append(parts, st.Content)
	}
	for _, v := range parts {
		if err := mxhttp.CheckEventJSON(v); err != nil {
			return eventJSONError(err)
		}
	}
	return nil
}

// uniqueUsers returns users without repeats, in their first order.
func uniqueUsers(users []id.UserID) []id.UserID {
	seen := map[id.UserID]bool{}
	out := users[:0]
	for _, u := range users {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}
