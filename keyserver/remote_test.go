package keyserver

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// fakeFederation answers key queries per server: "slow.example" never
// answers (ignoring its context, the worst case), "down.example" fails, any
// other server returns a key for each user asked, plus one for a user of
// another server that must not be believed.
type fakeFederation struct {
	Federation
	release chan struct{} // closed when the test ends
	t       testing.TB
}

func (f fakeFederation) QueryKeys(ctx context.Context, server string, q map[string][]string) (*QueryResponse, error) {
	switch server {
	case "slow.example":
		<-f.release // no answer while the test runs
		return nil, errors.New("released")
	case "down.example":
		return nil, errors.New("connection refused")
	}
	r := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}}
	for u := range q {
		r.DeviceKeys[u] = map[string]json.RawMessage{"DEV": deviceKeys(f.t, u, "DEV")}
	}
	r.DeviceKeys["@victim:local.example"] = map[string]json.RawMessage{"EVIL": json.RawMessage(`{}`)}
	return r, nil
}

func TestQueryRemoteTimeoutAndFailures(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	s := New(Options{ServerName: "local.example", Federation: fakeFederation{release: release, t: t}})
	req := &QueryRequest{Timeout: 50, DeviceKeys: map[string][]string{
		"@a:fast.example": nil, "@b:slow.example": nil, "@c:down.example": nil,
	}}
	resp, err := s.Query(context.Background(), "@me:local.example", req)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.DeviceKeys["@a:fast.example"]["DEV"]; !ok {
		t.Errorf("fast server's keys missing: %v", resp.DeviceKeys)
	}
	if _, ok := resp.DeviceKeys["@victim:local.example"]; ok {
		t.Error("a remote server's answer for a user of another server was believed")
	}
	for _, server := range []string{"slow.example", "down.example"} {
		if _, ok := resp.Failures[server]; !ok {
			t.Errorf("no failure reported for %s: %v", server, resp.Failures)
		}
	}
	if _, ok := resp.Failures["fast.example"]; ok {
		t.Errorf("failure reported for the server that answered: %v", resp.Failures)
	}
}

func TestQueryWithoutFederationReportsRemoteServers(t *testing.T) {
	s := New(Options{ServerName: "local.example"})
	resp, err := s.Query(context.Background(), "@me:local.example", &QueryRequest{DeviceKeys: map[string][]string{"@a:remote.example": nil}})
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := resp.Failures["remote.example"].(map[string]any); f["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("failures = %v", resp.Failures)
	}
}

func TestRemoteTimeout(t *testing.T) {
	for _, tc := range []struct {
		ms   int64
		want time.Duration
		bad  bool
	}{
		{0, defaultRemoteTimeout, false},
		{1500, 1500 * time.Millisecond, false},
		{1 << 62, maxRemoteTimeout, false}, // no overflow
		{-1, 0, true},
	} {
		got, err := remoteTimeout(tc.ms)
		var mErr *mxhttp.Error
		if tc.bad != errors.As(err, &mErr) || got != tc.want {
			t.Errorf("remoteTimeout(%d) = %v, %v", tc.ms, got, err)
		}
		if tc.bad && mErr.Code != "M_INVALID_PARAM" {
			t.Errorf("remoteTimeout(%d): %s, want M_INVALID_PARAM", tc.ms, mErr.Code)
		}
	}
	s := New(Options{ServerName: "local.example"})
	for _, call := range []func() error{
		func() error {
			_, err := s.Query(context.Background(), "@me:local.example", &QueryRequest{Timeout: -5})
			return err
		},
		func() error { _, err := s.Claim(context.Background(), &ClaimRequest{Timeout: -5}); return err },
	} {
		var mErr *mxhttp.Error
		if err := call(); !errors.As(err, &mErr) || mErr.Code != "M_INVALID_PARAM" {
			t.Errorf("negative timeout: %v", err)
		}
	}
}
