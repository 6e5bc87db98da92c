package clientapi

import (
	"encoding/json"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Profiles are served with or without an access token, as profile.yaml
// defines GET without a security section (publicRoutes). Other servers' users'
// profiles are asked of their servers (accounts.Options.Remote).

func (a *API) getProfile(r *http.Request) (any, error) {
	p, err := a.Accounts.GetProfile(r.Context(), id.UserID(mxhttp.PathParam(r, "userId")))
	if err != nil {
		return nil, err
	}
	return p.JSON(), nil
}

func (a *API) getProfileField(r *http.Request) (any, error) {
	key := mxhttp.PathParam(r, "keyName")
	if !accounts.ValidProfileKey(key) {
		return nil, mxhttp.InvalidParam("Invalid profile key %q", key)
	}
	p, err := a.Accounts.GetProfile(r.Context(), id.UserID(mxhttp.PathParam(r, "userId")))
	if err != nil {
		return nil, err
	}
	v, ok := p.JSON()[key]
	if !ok {
		return nil, mxhttp.NotFound("Profile field %q not set", key)
	}
	return map[string]any{key: v}, nil
}

func (a *API) putProfileField(r *http.Request) (any, error) {
	key := mxhttp.PathParam(r, "keyName")
	body, err := mxhttp.ReadJSONObject(r)
	if err != nil {
		return nil, err
	}
	userID, err := ownUser(r, "the profile")
	if err != nil {
		return nil, err
	}
	if !accounts.ValidProfileKey(key) {
		return nil, mxhttp.InvalidParam("Invalid profile key %q", key)
	}
	value, ok := body[key]
	if !ok {
		return nil, mxhttp.MissingParam("The body must contain the %q property", key)
	}
	if len(body) != 1 {
		return nil, mxhttp.BadJSON("The body must contain exactly one property, %q", key)
	}
	if value == nil {
		value = json.RawMessage("null")
	}
	return mxhttp.EmptyOr(a.Accounts.SetProfileField(r.Context(), userID, key, value))
}

func (a *API) deleteProfileField(r *http.Request) (any, error) {
	userID, err := ownUser(r, "the profile")
	if err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(a.Accounts.SetProfileField(r.Context(), userID, mxhttp.PathParam(r, "keyName"), nil))
}
