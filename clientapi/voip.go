package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// callRoutes are the endpoints clients call around VoIP and bridges.
func (a *API) callRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/voip/turnServer", mxhttp.JSON(a.turnServer))
	// Third-party networks come from bridges (application services), which
	// Myelin does not host: no protocols, nothing to look up.
	r.Method(http.MethodGet, "/thirdparty/protocols", mxhttp.JSON(emptyObject))
	r.Method(http.MethodGet, "/thirdparty/protocol/{protocol}", mxhttp.JSON(unknownProtocol))
	r.Method(http.MethodGet, "/thirdparty/location/{protocol}", mxhttp.JSON(unknownProtocol))
	r.Method(http.MethodGet, "/thirdparty/user/{protocol}", mxhttp.JSON(unknownProtocol))
	r.Method(http.MethodGet, "/thirdparty/location", mxhttp.JSON(emptyList))
	r.Method(http.MethodGet, "/thirdparty/user", mxhttp.JSON(emptyList))
}

func emptyObject(*http.Request) (any, error) { return map[string]any{}, nil }
func emptyList(*http.Request) (any, error)   { return []any{}, nil }
func unknownProtocol(*http.Request) (any, error) {
	return nil, mxhttp.NotFound("No bridge provides this protocol")
}

// turnServer is GET /voip/turnServer: the TURN relays of calls.turn_uris with
// credentials for the caller. Without TURN configured it answers {}, as
// Synapse does (clients ask at every start and then call without a relay).
func (a *API) turnServer(r *http.Request) (any, error) {
	c := a.Config.Calls
	if !c.TurnConfigured() {
		return map[string]any{}, nil
	}
	username, password, ttl := turnCredentials(c, authn.FromRequest(r).UserID.String(), time.Now())
	return map[string]any{"username": username, "password": password, "uris": c.TurnURIs, "ttl": ttl}, nil
}

// turnCredentials are static credentials, or the TURN REST API ones coturn
// checks with use-auth-secret: the username is "<expiry unix time>:<user ID>"
// and the password base64(HMAC-SHA1(secret, username)). ttl is in seconds.
func turnCredentials(c config.Calls, userID string, now time.Time) (username, password string, ttl int64) {
	ttl = int64(c.TurnUserLifetime.Seconds())
	if c.TurnSharedSecret == "" {
		return c.TurnUsername, c.TurnPassword, ttl
	}
	username = strconv.FormatInt(now.Unix()+ttl, 10) + ":" + userID
	mac := hmac.New(sha1.New, []byte(c.TurnSharedSecret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil)), ttl
}
