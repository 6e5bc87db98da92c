package clientapi

import (
	"encoding/json"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Profiles are served to authenticated users only (the spec allows servers
// to require auth for profile lookups; it keeps member data from anonymous
// scraping). Remote profiles need federation: M_NOT_FOUND until it lands.

func (a *API) getProfile(w http.ResponseWriter, r *http.Request) error {
	p, err := a.Accounts.GetProfile(r.Context(), id.UserID(pathParam(r, "userId")))
	if err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, p.JSON())
	return nil
}

func (a *API) getProfileField(w http.ResponseWriter, r *http.Request) error {
	key := pathParam(r, "keyName")
	if !accounts.ValidProfileKey(key) {
		return mxhttp.InvalidParam("Invalid profile key %q", key)
	}
	p, err := a.Accounts.GetProfile(r.Context(), id.UserID(pathParam(r, "userId")))
	if err != nil {
		return err
	}
	v, ok := p.JSON()[key]
	if !ok {
		return mxhttp.NotFound("Profile field %q not set", key)
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{key: v})
	return nil
}

func (a *API) putProfileField(w http.ResponseWriter, r *http.Request) error {
	key := pathParam(r, "keyName")
	userID := id.UserID(pathParam(r, "userId"))
	body, err := mxhttp.ReadJSONObject(r)
	if err != nil {
		return err
	}
	if dev := authn.FromContext(r.Context()); dev.UserID != userID {
		return mxhttp.Forbidden("Cannot change another user's profile")
	}
	if !accounts.ValidProfileKey(key) {
		return mxhttp.InvalidParam("Invalid profile key %q", key)
	}
	value, ok := body[key]
	if !ok {
		return mxhttp.MissingParam("The body must contain the %q property", key)
	}
	if len(body) != 1 {
		return mxhttp.BadJSON("The body must contain exactly one property, %q", key)
	}
	if value == nil {
		value = json.RawMessage("null")
	}
	if err := a.Accounts.SetProfileField(r.Context(), userID, key, value); err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, mxhttp.Empty)
	return nil
}

func (a *API) deleteProfileField(w http.ResponseWriter, r *http.Request) error {
	key := pathParam(r, "keyName")
	userID := id.UserID(pathParam(r, "userId"))
	if dev := authn.FromContext(r.Context()); dev.UserID != userID {
		return mxhttp.Forbidden("Cannot change another user's profile")
	}
	if err := a.Accounts.SetProfileField(r.Context(), userID, key, nil); err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, mxhttp.Empty)
	return nil
}
