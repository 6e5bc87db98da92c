package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) createFilter(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	userID, err := ownUser(r, "filters")
	if err != nil {
		return err
	}
	filterID, err := a.Accounts.CreateFilter(r.Context(), userID, body)
	if err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"filter_id": filterID})
	return nil
}

func (a *API) getFilter(w http.ResponseWriter, r *http.Request) error {
	userID, err := ownUser(r, "filters")
	if err != nil {
		return err
	}
	f, err := a.Accounts.GetFilterJSON(r.Context(), userID, pathParam(r, "filterId"))
	if err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, f)
	return nil
}
