package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/storage"
)

func (m *memStore) InsertMediaRefs(_ context.Context, refs []storage.MediaRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range refs {
		if !slices.ContainsFunc(m.refs, func(x storage.MediaRef) bool { return x.URI == r.URI && x.EventID == r.EventID }) {
			m.refs = append(m.refs, r)
		}
	}
	return nil
}

func (m *memStore) MediaRefRooms(_ context.Context, uri string, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, r := range m.refs {
		if r.URI == uri && !slices.Contains(out, r.RoomID) && len(out) < limit {
			out = append(out, r.RoomID)
		}
	}
	return out, nil
}

func (m *memStore) MediaRefTail(_ context.Context, uri string, limit int) ([]storage.MediaRefCandidate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.MediaRefCandidate
	for _, c := range m.tail {
		if strings.Contains(string(c.JSON), uri) && len(out) < limit {
			out = append(out, c)
		}
	}
	return out, nil
}

func TestReferences(t *testing.T) {
	long := strings.Repeat("a", 300)
	many := ""
	for i := range 40 {
		many += fmt.Sprintf(`<img src='mxc://a.test/m%d'>`, i)
	}
	for _, tc := range []struct {
		name, pdu string
		want      []string
	}{
		{"image with thumbnail", `{"type":"m.room.message","content":{"msgtype":"m.image","url":"mxc://a.test/img","info":{"thumbnail_url":"mxc://a.test/th"}}}`,
			[]string{"mxc://a.test/img", "mxc://a.test/th"}},
		{"encrypted attachment in clear content", `{"content":{"file":{"url":"mxc://a.test/enc"},"info":{"thumbnail_file":{"url":"mxc://a.test/encth"}}}}`,
			[]string{"mxc://a.test/enc", "mxc://a.test/encth"}},
		{"member avatar", `{"type":"m.room.member","content":{"membership":"join","avatar_url":"mxc://b.test:8448/av"}}`,
			[]string{"mxc://b.test:8448/av"}},
		{"room avatar", `{"type":"m.room.avatar","content":{"url":"mxc://a.test/room"}}`, []string{"mxc://a.test/room"}},
		{"sticker", `{"type":"m.sticker","content":{"url":"mxc://a.test/st"}}`, []string{"mxc://a.test/st"}},
		{"formatted body images, deduplicated", `{"content":{"url":"mxc://a.test/x","formatted_body":"<p>hi <IMG alt='y' SRC='mxc://a.test/y'> <img src=mxc://a.test/x></p>"}}`,
			[]string{"mxc://a.test/x", "mxc://a.test/y"}},
		{"an edit's new content", `{"content":{"m.new_content":{"url":"mxc://a.test/new"}}}`, []string{"mxc://a.test/new"}},
		{"encrypted event names nothing", `{"type":"m.room.encrypted","content":{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"mxc://a.test/nope"}}`, nil},
		{"a body mentioning a URI is no reference", `{"content":{"body":"see mxc://a.test/body"}}`, nil},
		{"bad URIs", `{"content":{"url":"mxc://a.test/../etc","avatar_url":"https://a.test/x","info":{"thumbnail_url":"mxc:///id"},"file":{"url":"mxc://a.test/"}}}`, nil},
		{"bad server", `{"content":{"url":"mxc://bad host/id","avatar_url":"mxc://a.test/` + long + `"}}`, nil},
		{"non-string fields", `{"content":{"url":5,"info":{"thumbnail_url":{"a":1}},"formatted_body":7}}`, nil},
		{"not JSON", `{"content":`, nil},
		{"no content", `{}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := References([]byte(tc.pdu)); !slices.Equal(got, tc.want) {
				t.Fatalf("References = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		got := References([]byte(`{"content":{"formatted_body":"` + many + `"}}`))
		if len(got) != MaxReferencesPerEvent || got[0] != "mxc://a.test/m0" {
			t.Fatalf("got %d URIs (%q), want the first %d", len(got), got, MaxReferencesPerEvent)
		}
	})
}

// fakeResidency admits server to the rooms listed, for media.
type fakeResidency struct {
	enabled bool
	shares  bool
	admits  map[string]bool // room → admitted
}

func (f fakeResidency) Server(_ context.Context, server string, kind residency.Kind) residency.Decision {
	if !f.enabled {
		return residency.Decision{Allowed: true, Rule: residency.RuleDisabled}
	}
	if !f.shares {
		return residency.Decision{Rule: "share", Reason: "zone does not share media"}
	}
	return residency.Decision{Allowed: true, Rule: "zone"}
}

func (f fakeResidency) Room(_ context.Context, room, server string, kind residency.Kind) residency.Decision {
	if f.admits[room] {
		return residency.Decision{Allowed: true, Rule: "zone"}
	}
	return residency.Decision{Rule: "includes", Reason: "room " + room + " is not for " + server}
}

type recordingAudit struct{ flows, refusals []string }

func (a *recordingAudit) MediaFlow(direction, server, uri string, bytes int64) {
	a.flows = append(a.flows, fmt.Sprintf("%s %s %s %d", direction, server, uri, bytes))
}

func (a *recordingAudit) MediaRefusal(d residency.Decision, direction, server, purpose, uri, room string) {
	a.refusals = append(a.refusals, direction+" "+server+" "+d.Rule+" "+room)
}

// The follower's handler records each event's references; serving follows
// the record, and the events past the follower's cursor (the tail).
func TestServeFollowsReferenceRecord(t *testing.T) {
	st := newMemStore()
	s := newTestService(t, st)
	m, err := s.Upload(context.Background(), Upload{Uploader: "@u:test", ContentType: "text/plain", Length: 2, Body: strings.NewReader("hi")})
	if err != nil {
		t.Fatal(err)
	}
	au := &recordingAudit{}
	s.residency, s.audit = fakeResidency{enabled: true, shares: true, admits: map[string]bool{"!open": true}}, au
	serve := func() error {
		_, _, body, err := s.ServeMedia(context.Background(), "b.test", m.MediaID, 0)
		if err == nil {
			body.Close()
		}
		return err
	}
	status := func(err error) int {
		var e *mxhttp.Error
		if errors.As(err, &e) {
			return e.Status
		}
		return 0
	}
	if err := serve(); status(err) != http.StatusForbidden || !strings.Contains(err.Error(), "not referenced") {
		t.Fatalf("unreferenced item: %v, want 403 naming it unreferenced", err)
	}
	pdu := func(uri string) []byte { return []byte(`{"content":{"msgtype":"m.image","url":"` + uri + `"}}`) }
	if err := s.RecordReferences(context.Background(), []*storage.Event{
		{EventID: "$1", RoomID: "!closed", StreamPos: 1, JSON: pdu(m.MXC())},
		{EventID: "$2", RoomID: "!closed", StreamPos: 2, JSON: pdu("mxc://other.test/x")},
		{EventID: "$1", RoomID: "!closed", StreamPos: 1, JSON: pdu(m.MXC())}, // delivered twice
	}); err != nil {
		t.Fatal(err)
	}
	if len(st.refs) != 2 {
		t.Fatalf("record holds %v, want 2 rows", st.refs)
	}
	if err := serve(); status(err) != http.StatusForbidden || !strings.Contains(err.Error(), "!closed") {
		t.Fatalf("item referenced in a closed room: %v, want 403 with the room's reason", err)
	}
	// Shared a moment ago in the open room, not yet recorded: found in the tail.
	st.tail = append(st.tail, storage.MediaRefCandidate{RoomID: "!open", JSON: []byte(`{"content":{"body":"` + m.MXC() + `"}}`)})
	if err := serve(); status(err) != http.StatusForbidden {
		t.Fatalf("a body mentioning the URI admitted b: %v", err)
	}
	st.tail = append(st.tail, storage.MediaRefCandidate{RoomID: "!open", JSON: pdu(m.MXC())})
	if err := serve(); err != nil {
		t.Fatalf("item referenced in an open room (tail): %v", err)
	}
	if len(au.flows) != 1 || au.flows[0] != "outbound b.test "+m.MXC()+" 2" || len(au.refusals) != 3 {
		t.Fatalf("audit flows %q refusals %q", au.flows, au.refusals)
	}
	// A zone that does not share media: refused before the record is read.
	s.residency = fakeResidency{enabled: true, admits: map[string]bool{"!open": true}}
	if err := serve(); status(err) != http.StatusForbidden || !strings.Contains(err.Error(), "does not share") {
		t.Fatalf("zone not sharing media: %v", err)
	}
	// Policy off: served whatever the record says.
	s.residency = fakeResidency{}
	st.refs, st.tail = nil, nil
	if err := serve(); err != nil {
		t.Fatalf("policy off: %v", err)
	}
}

func newTestService(t testing.TB, st *memStore) *Service {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	s, err := New(Options{Store: st, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (m *memStore) EncryptedRoomsShared(context.Context, string, string, int) ([]string, error) {
	return nil, nil
}
