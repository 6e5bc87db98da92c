package clientapi

import (
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// ownUser checks that the {userId} in the path is the caller.
func ownUser(r *http.Request, what string) (id.UserID, error) {
	userID := id.UserID(mxhttp.PathParam(r, "userId"))
	if dev := authn.FromRequest(r); dev.UserID != userID {
		return "", mxhttp.Forbidden("Cannot access %s of other users.", what)
	}
	return userID, nil
}

func (a *API) putAccountData(r *http.Request) (any, error) {
	body, err := mxhttp.ReadRawJSON(r)
	if err != nil {
		return nil, err
	}
	userID, err := ownUser(r, "account data")
	if err != nil {
		return nil, err
	}
	roomID, evType := id.RoomID(mxhttp.PathParam(r, "roomId")), mxhttp.PathParam(r, "type")
	return mxhttp.EmptyOr(a.Accounts.SetAccountData(r.Context(), userID, roomID, evType, body))
}

func (a *API) getAccountData(r *http.Request) (any, error) {
	userID, err := ownUser(r, "account data")
	if err != nil {
		return nil, err
	}
	return a.Accounts.GetAccountData(r.Context(), userID, id.RoomID(mxhttp.PathParam(r, "roomId")), mxhttp.PathParam(r, "type"))
}
