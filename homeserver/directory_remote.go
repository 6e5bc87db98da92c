package homeserver

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/directory"
)

// directoryRemote backs directory.Remote with the transport's client: other
// servers' aliases (GET /_matrix/federation/v1/query/directory) and room
// directories (/_matrix/federation/v1/publicRooms; POST when filtering, as
// only POST carries a filter).
type directoryRemote struct{ c *mfed.Client }

func (r directoryRemote) QueryDirectory(ctx context.Context, server, alias string) (*directory.AliasInfo, error) {
	var info directory.AliasInfo
	_, resp, err := r.c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodGet,
		Path: mfed.URLPath{"v1", "query", "directory"}, Query: url.Values{"room_alias": {alias}},
		Authenticate: true, ResponseJSON: &info})
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return nil, directory.ErrRemoteNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("resolving %s on %s: %w", alias, server, err)
	}
	return &info, nil
}

func (r directoryRemote) PublicRooms(ctx context.Context, server string, req directory.PublicRoomsRequest) (*directory.PublicRoomsResponse, error) {
	params := mfed.RequestParams{ServerName: server, Path: mfed.URLPath{"v1", "publicRooms"}, Authenticate: true}
	if req.Filter.GenericSearchTerm != "" || req.Filter.RoomTypes != nil {
		body := map[string]any{"filter": req.Filter}
		if req.Limit > 0 {
			body["limit"] = req.Limit
		}
		if req.Since != "" {
			body["since"] = req.Since
		}
		params.Method, params.RequestJSON = http.MethodPost, body
	} else {
		params.Method, params.Query = http.MethodGet, url.Values{}
		if req.Limit > 0 {
			params.Query.Set("limit", strconv.Itoa(req.Limit))
		}
		if req.Since != "" {
			params.Query.Set("since", req.Since)
		}
	}
	var out directory.PublicRoomsResponse
	params.ResponseJSON = &out
	_, resp, err := r.c.MakeFullRequest(ctx, params)
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return nil, directory.ErrRemoteNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading the room directory of %s: %w", server, err)
	}
	return &out, nil
}

var _ directory.Remote = directoryRemote{}
