package keyserver

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
)

// paddingFederation answers /user/keys/query with more than was asked: the
// devices asked for and one more, a user of its own server nobody asked
// about, and, for @big, more devices than MaxRemoteDevices.
type paddingFederation struct {
	Federation
	t   testing.TB
	big map[string]json.RawMessage
}

func (f paddingFederation) QueryKeys(_ context.Context, server string, q map[string][]string) (*QueryResponse, error) {
	r := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}}
	for u := range q {
		if u == "@big:pad.example" {
			r.DeviceKeys[u] = f.big
			continue
		}
		r.DeviceKeys[u] = map[string]json.RawMessage{"DEV": deviceKeys(f.t, u, "DEV"), "OTHER": deviceKeys(f.t, u, "OTHER")}
	}
	r.DeviceKeys["@extra:pad.example"] = map[string]json.RawMessage{"X": deviceKeys(f.t, "@extra:pad.example", "X")}
	return r, nil
}

// A remote server's /user/keys/query answer is kept only for what the
// client asked: no user it did not ask about, no device it did not name,
// and no user with more devices than MaxRemoteDevices (refused before their
// signatures are checked, as a resync's list is).
func TestAttackRemoteKeysAnswerBounded(t *testing.T) {
	big := map[string]json.RawMessage{}
	for i := range MaxRemoteDevices + 1 {
		dev := fmt.Sprintf("D%d", i)
		big[dev] = deviceKeys(t, "@big:pad.example", dev)
	}
	s := New(Options{ServerName: "local.example", Federation: paddingFederation{t: t, big: big}})
	resp, err := s.Query(context.Background(), "@me:local.example", &QueryRequest{DeviceKeys: map[string][]string{
		"@a:pad.example": {"DEV"}, "@b:pad.example": nil, "@big:pad.example": nil}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.DeviceKeys["@extra:pad.example"]; ok {
		t.Error("the answer's user nobody asked about reached the client")
	}
	if _, ok := resp.DeviceKeys["@a:pad.example"]["OTHER"]; ok {
		t.Error("a device the client did not name reached the client")
	}
	if _, ok := resp.DeviceKeys["@a:pad.example"]["DEV"]; !ok {
		t.Errorf("the device asked for is missing: %v", resp.DeviceKeys["@a:pad.example"])
	}
	if len(resp.DeviceKeys["@b:pad.example"]) != 2 {
		t.Errorf("a whole-list query lost devices: %v", resp.DeviceKeys["@b:pad.example"])
	}
	if n := len(resp.DeviceKeys["@big:pad.example"]); n > MaxRemoteDevices {
		t.Errorf("%d devices of one remote user reached the client, at most %d accepted", n, MaxRemoteDevices)
	}
}
