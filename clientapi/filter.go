package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) createFilter(r *http.Request) (any, error) {
	body, err := mxhttp.ReadRawJSON(r)
	if err != nil {
		return nil, err
	}
	userID, err := ownUser(r, "filters")
	if err != nil {
		return nil, err
	}
	filterID, err := a.Accounts.CreateFilter(r.Context(), userID, body)
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": filterID}, nil
}

func (a *API) getFilter(r *http.Request) (any, error) {
	userID, err := ownUser(r, "filters")
	if err != nil {
		return nil, err
	}
	f, err := a.Accounts.GetFilterJSON(r.Context(), userID, mxhttp.PathParam(r, "filterId"))
	if err != nil {
		return nil, err
	}
	return f, nil
}
