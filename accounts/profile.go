package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Profile is a user's public profile.
type Profile struct {
	DisplayName string
	AvatarURL   id.ContentURIString
	// Fields are the extended profile fields (m.tz, custom keys).
	Fields map[string]json.RawMessage
}

// JSON returns the profile as GET /profile/{userId} answers it.
func (p *Profile) JSON() map[string]any {
	out := make(map[string]any, len(p.Fields)+2)
	for k, v := range p.Fields {
		out[k] = v
	}
	if p.DisplayName != "" {
		out["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		out["avatar_url"] = p.AvatarURL
	}
	return out
}

// Profile keys with dedicated columns.
const (
	ProfileDisplayName = "displayname"
	ProfileAvatarURL   = "avatar_url"
)

// Limits: the total and the key length are the spec's; the display name and
// avatar URL bounds (in characters) are Synapse's. Both are copied into every
// member event of the user and served to anyone (GET /profile, the user
// directory), so they are bounded on their own, below the total.
const (
	maxProfileBytes    = 64 * 1024
	maxProfileKeyBytes = 255
	MaxDisplayName     = 256
	MaxAvatarURL       = 1000
)

// profileKeyRE is the spec's keyName pattern.
var profileKeyRE = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// ValidProfileKey reports whether key may be used as a profile field name.
func ValidProfileKey(key string) bool { return profileKeyRE.MatchString(key) }

// remoteProfileTimeout bounds a profile query to another server: the
// client's request waits on it.
const remoteProfileTimeout = 10 * time.Second

// GetProfile returns a user's profile: a local user's from the store
// (M_NOT_FOUND for unknown or deactivated users), another server's user's
// by asking that server (M_NOT_FOUND when it has none).
func (s *Service) GetProfile(ctx context.Context, userID id.UserID) (*Profile, error) {
	if !s.IsLocal(userID) {
		return s.remoteProfile(ctx, userID)
	}
	return s.localProfile(ctx, userID)
}

// localProfile is a local user's profile; M_NOT_FOUND for anyone else.
func (s *Service) localProfile(ctx context.Context, userID id.UserID) (*Profile, error) {
	if !s.IsLocal(userID) {
		return nil, mxhttp.NotFound("Profile not found")
	}
	u, err := s.store.GetUser(ctx, userID.String())
	if errors.Is(err, storage.ErrNotFound) || err == nil && u.Deactivated {
		return nil, mxhttp.NotFound("Profile not found")
	}
	if err != nil {
		return nil, err
	}
	return &Profile{DisplayName: u.DisplayName, AvatarURL: id.ContentURIString(u.AvatarURL), Fields: u.ProfileFields}, nil
}

// remoteProfile asks userID's server for their profile.
func (s *Service) remoteProfile(ctx context.Context, userID id.UserID) (*Profile, error) {
	if s.remote == nil {
		return nil, mxhttp.NotFound("Profile not found")
	}
	if _, _, err := userID.Parse(); err != nil {
		return nil, mxhttp.NotFound("Profile not found")
	}
	ctx, cancel := context.WithTimeout(ctx, remoteProfileTimeout)
	defer cancel()
	fields, err := s.remote.QueryProfile(ctx, userID)
	if errors.Is(err, ErrRemoteProfileNotFound) {
		return nil, mxhttp.NotFound("Profile not found")
	}
	if refusal := (*mxhttp.Error)(nil); errors.As(err, &refusal) && refusal.Status == http.StatusForbidden {
		return nil, refusal // a policy's refusal, before any request: its reason
	}
	if err != nil {
		return nil, &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: fmt.Sprintf("Could not fetch the profile from %s's server", userID)}
	}
	p := &Profile{Fields: map[string]json.RawMessage{}}
	size := 0
	for k, v := range fields {
		size += len(k) + len(v)
		switch k {
		case ProfileDisplayName:
			_ = json.Unmarshal(v, &p.DisplayName) // not a string: unset
		case ProfileAvatarURL:
			var u string
			_ = json.Unmarshal(v, &u)
			p.AvatarURL = id.ContentURIString(u)
		default:
			if ValidProfileKey(k) {
				p.Fields[k] = v
			}
		}
	}
	// Another server's answer is bounded as our own profiles are.
	if size > maxProfileBytes {
		return nil, &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
			Message: fmt.Sprintf("%s's server sent a profile larger than %d bytes", userID, maxProfileBytes)}
	}
	return p, nil
}

// ProfileJSON is a local user's profile as GET /profile/{userId} answers it
// (federation's profile query: never forwarded to another server).
func (s *Service) ProfileJSON(ctx context.Context, userID id.UserID) (map[string]any, error) {
	p, err := s.localProfile(ctx, userID)
	if err != nil {
		return nil, err
	}
	return p.JSON(), nil
}

// SetProfileField sets one profile field of userID to value (raw JSON);
// value nil deletes it. displayname and avatar_url must be strings (null
// clears either). avatar_url is not required to be an mxc:// URI: clients
// and Complement's TestAvatarUrlUpdate set others.
func (s *Service) SetProfileField(ctx context.Context, userID id.UserID, key string, value json.RawMessage) error {
	if len(key) > maxProfileKeyBytes {
		return (&mxhttp.Error{Status: 400, Code: "M_KEY_TOO_LARGE", Message: "Profile key is longer than 255 bytes"})
	}
	if !ValidProfileKey(key) {
		return mxhttp.InvalidParam("Invalid profile key %q", key)
	}
	p, err := s.localProfile(ctx, userID)
	if err != nil {
		return err
	}
	isNull := value == nil || string(value) == "null"
	switch key {
	case ProfileDisplayName, ProfileAvatarURL:
		var str string
		if !isNull {
			if err := json.Unmarshal(value, &str); err != nil {
				return mxhttp.BadJSON("%s must be a string", key)
			}
		}
		if key == ProfileDisplayName {
			if utf8.RuneCountInString(str) > MaxDisplayName {
				return mxhttp.InvalidParam("displayname is longer than %d characters", MaxDisplayName)
			}
			p.DisplayName = str
		} else {
			if utf8.RuneCountInString(str) > MaxAvatarURL {
				return mxhttp.InvalidParam("avatar_url is longer than %d characters", MaxAvatarURL)
			}
			p.AvatarURL = id.ContentURIString(str)
		}
		if err := checkProfileSize(p); err != nil {
			return err
		}
		if key == ProfileDisplayName {
			err = s.store.SetDisplayName(ctx, userID.String(), str)
		} else {
			err = s.store.SetAvatarURL(ctx, userID.String(), str)
		}
		if err != nil {
			return err
		}
		s.fireProfileChanged(ctx, userID)
		return nil
	}
	fields := make(map[string]json.RawMessage, len(p.Fields)+1)
	for k, v := range p.Fields {
		fields[k] = v
	}
	if value == nil {
		delete(fields, key)
	} else {
		if key == "m.tz" && !isNull {
			var tz string
			if err := json.Unmarshal(value, &tz); err != nil {
				return mxhttp.BadJSON("m.tz must be a string")
			}
		}
		fields[key] = value
	}
	p.Fields = fields
	if err := checkProfileSize(p); err != nil {
		return err
	}
	return s.store.SetProfileFields(ctx, userID.String(), fields)
}

// checkProfileSize enforces the spec's bound on the whole profile.
func checkProfileSize(p *Profile) error {
	if size, _ := json.Marshal(p.JSON()); len(size) > maxProfileBytes {
		return &mxhttp.Error{Status: 400, Code: "M_PROFILE_TOO_LARGE", Message: "The profile would exceed 64 KiB"}
	}
	return nil
}
