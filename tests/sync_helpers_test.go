package tests

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// syncOnce runs one /sync with a filter (inline JSON or "") and the timeout in ms.
func syncOnce(t testing.TB, c *mautrix.Client, since, filter string, timeoutMS int) *mautrix.RespSync {
	t.Helper()
	resp, err := c.SyncRequest(context.Background(), timeoutMS, since, filter, false, event.PresenceOnline)
	if err != nil {
		t.Fatalf("sync as %s: %v", c.UserID, err)
	}
	return resp
}

// syncUntil long-polls from since until cond holds for a response, returning
// it; it fails after 20 responses (each long-poll lasts up to 5 s).
func syncUntil(t testing.TB, c *mautrix.Client, since, filter string, cond func(*mautrix.RespSync) bool) *mautrix.RespSync {
	t.Helper()
	for i := 0; i < 20; i++ {
		resp := syncOnce(t, c, since, filter, 5000)
		if cond(resp) {
			return resp
		}
		since = resp.NextBatch
	}
	t.Fatalf("sync as %s: condition never held", c.UserID)
	return nil
}

func syncTimelineIDs(r *mautrix.SyncJoinedRoom) []id.EventID {
	var out []id.EventID
	for _, e := range r.Timeline.Events {
		out = append(out, e.ID)
	}
	return out
}

func syncHasEvent(evs []*event.Event, id id.EventID) bool {
	for _, e := range evs {
		if e.ID == id {
			return true
		}
	}
	return false
}

// rawSync returns the raw /sync JSON (for fields mautrix does not parse).
func rawSync(t testing.TB, c *mautrix.Client, query map[string]string) (map[string]any, error) {
	t.Helper()
	body, err := c.MakeFullRequest(context.Background(), mautrix.FullRequest{
		Method: "GET", URL: c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, query),
	})
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func syncErrcode(err error) string {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.RespError != nil {
		return httpErr.RespError.ErrCode
	}
	return ""
}

func syncStatus(err error) int {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode
	}
	return 0
}

// timelineOf is room's timeline events in a /sync answer; none when the
// answer does not carry the room (a sync woken by something else).
func timelineOf(r *mautrix.RespSync, room id.RoomID) []*event.Event {
	if jr := r.Rooms.Join[room]; jr != nil {
		return jr.Timeline.Events
	}
	return nil
}
