package tests

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// Concurrent requests racing for the same pending media ID or the same
// pending-upload allowance.

// concurrently sends n requests at once and returns their statuses and bodies.
func concurrently(n int, send func(i int) (*http.Request, error)) (statuses []int, bodies []string, err error) {
	statuses, bodies = make([]int, n), make([]string, n)
	errs := make([]error, n)
	reqs := make([]*http.Request, n)
	for i := range n {
		if reqs[i], err = send(i); err != nil {
			return nil, nil, err
		}
	}
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		wg.Go(func() {
			start.Wait()
			resp, err := http.DefaultClient.Do(reqs[i])
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			statuses[i], bodies[i] = resp.StatusCode, string(raw)
		})
	}
	start.Done()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, nil, err
		}
	}
	return statuses, bodies, nil
}

func TestMediaConcurrentPutSameID(t *testing.T) {
	forEachMediaBackend(t, func(m *config.Media) { m.MaxPendingUploads = 100 }, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		for round := range 15 {
			r := rawMedia(t, "POST", srv.URL+"/_matrix/media/v1/create", alice.AccessToken, "", nil)
			uri, _ := r.Body["content_uri"].(string)
			if r.Status != 200 || len(uri) < 7 {
				t.Fatalf("create: %d %s", r.Status, r.Raw)
			}
			url := srv.URL + "/_matrix/media/v3/upload/" + uri[len("mxc://"):]
			const n = 4
			statuses, bodies, err := concurrently(n, func(i int) (*http.Request, error) {
				req, err := http.NewRequest("PUT", url, bytes.NewReader(fmt.Appendf(nil, "content %d of round %d", i, round)))
				if err == nil {
					req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
					req.Header.Set("Content-Type", "text/plain")
				}
				return req, err
			})
			if err != nil {
				t.Fatal(err)
			}
			ok := 0
			for i, st := range statuses {
				switch st {
				case 200:
					ok++
				case 409:
				default:
					t.Fatalf("round %d: PUT %d: %d %s", round, i, st, bodies[i])
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: %d of %d concurrent PUTs to one media ID answered 200 (statuses %v)", round, ok, n, statuses)
			}
		}
	})
}

func TestMediaConcurrentCreateRespectsPendingCap(t *testing.T) {
	const maxPending = 3
	forEachMediaBackend(t, func(m *config.Media) { m.MaxPendingUploads = maxPending }, func(t *testing.T, srv *testserver.Server) {
		for round := range 5 {
			c := srv.Register(t, fmt.Sprintf("user%d", round))
			statuses, bodies, err := concurrently(12, func(int) (*http.Request, error) {
				req, err := http.NewRequest("POST", srv.URL+"/_matrix/media/v1/create", nil)
				if err == nil {
					req.Header.Set("Authorization", "Bearer "+c.AccessToken)
				}
				return req, err
			})
			if err != nil {
				t.Fatal(err)
			}
			ok := 0
			for i, st := range statuses {
				switch st {
				case 200:
					ok++
				case 429:
				default:
					t.Fatalf("create %d: %d %s", i, st, bodies[i])
				}
			}
			if ok != maxPending {
				t.Fatalf("round %d: %d concurrent creates succeeded, max_pending_uploads is %d", round, ok, maxPending)
			}
		}
	})
}
