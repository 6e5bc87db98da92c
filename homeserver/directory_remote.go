package homeserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/directory"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/roomview"
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

// spacesRemote backs roomview.RemoteSpaces with the transport's client: GET
// /_matrix/federation/v1/hierarchy/{roomId} on a child link's via servers in
// turn (at most 3 valid names, never ours), the first answer taken.
type spacesRemote struct {
	c          *mfed.Client
	serverName string
}

// maxHierarchyServers bounds the servers asked about one room.
const maxHierarchyServers = 3

func (r spacesRemote) RemoteHierarchy(ctx context.Context, servers []string, roomID id.RoomID, suggestedOnly bool) (*roomview.ServerHierarchyResponse, error) {
	var lastErr error = errors.New("no server to ask")
	asked := 0
	for _, server := range servers {
		if asked == maxHierarchyServers {
			break
		}
		if _, _, err := config.ParseServerName(server); err != nil || server == r.serverName {
			continue
		}
		asked++
		var resp roomview.ServerHierarchyResponse
		_, _, err := r.c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodGet,
			Path: mfed.URLPath{"v1", "hierarchy", roomID}, Query: url.Values{"suggested_only": {strconv.FormatBool(suggestedOnly)}},
			Authenticate: true, ResponseJSON: &resp})
		if err == nil {
			return &resp, nil
		}
		lastErr = fmt.Errorf("asking %s about %s: %w", server, roomID, err)
	}
	return nil, lastErr
}
