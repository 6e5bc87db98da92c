package clientapi

import (
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// ownUser checks that the {userId} in the path is the caller.
func ownUser(r *http.Request, what string) (id.UserID, error) {
	userID := id.UserID(pathParam(r, "userId"))
	if dev := authn.FromContext(r.Context()); dev.UserID != userID {
		return "", mxhttp.Forbidden("Cannot access %s of other users.", what)
	}
	return userID, nil
}

func (a *API) putAccountData(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	userID, err := ownUser(r, "account data")
	if err != nil {
		return err
	}
	err = a.Accounts.SetAccountData(r.Context(), userID, id.RoomID(pathParam(r, "roomId")), pathParam(r, "type"), body)
	if err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, mxhttp.Empty)
	return nil
}

func (a *API) getAccountData(w http.ResponseWriter, r *http.Request) error {
	userID, err := ownUser(r, "account data")
	if err != nil {
		return err
	}
	content, err := a.Accounts.GetAccountData(r.Context(), userID, id.RoomID(pathParam(r, "roomId")), pathParam(r, "type"))
	if err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, content)
	return nil
}
