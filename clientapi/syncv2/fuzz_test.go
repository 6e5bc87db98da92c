package syncv2

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

func matrixCode(err error) string {
	var mErr *mxhttp.Error
	if errors.As(err, &mErr) {
		return mErr.Code
	}
	return "not a Matrix error"
}

// FuzzParseToken: a since token is refused with M_INVALID_PARAM or parsed into
// non-negative positions (to-device at most the stream position) whose one
// written form is the token itself — no second spelling of a position.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"s0_0_0", "s5_17_3", "s1_2_5", "s01_2_0", "s-1_2_0", "s1__0", "s99999999999999999999_1_1", "t1_2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if c := matrixCode(err); c != "M_INVALID_PARAM" {
				t.Fatalf("ParseToken(%q): %v (%s)", s, err, c)
			}
			return
		}
		if tok.Pos < 0 || tok.Typing < 0 || tok.ToDevice < 0 || tok.ToDevice > tok.Pos {
			t.Fatalf("ParseToken(%q) = %+v", s, tok)
		}
		if tok.String() != s {
			t.Fatalf("ParseToken(%q) = %+v, written %q: two spellings of one token", s, tok, tok.String())
		}
	})
}

// FuzzParseFilter: the filters POST /filter stores and the ones /sync reads
// (stored or inline) go through the same validation — one refuses what the
// other refuses, so a stored filter always loads and an inline one is no
// laxer — with M_BAD_JSON/M_NOT_JSON/M_INVALID_PARAM, never a panic; an
// accepted filter's limits are bounded and applying it to events never panics,
// and its type patterns match as the spec's '*' wildcard says.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"room":{"timeline":{"limit":5,"types":["m.*"],"not_senders":["@a:b"]}}}`,
		`{"room":{"timeline":{"limit":-1}}}`, `{"event_format":"bogus"}`, `{"room":{"rooms":[],"state":{"lazy_load_members":true}}}`,
		`{"presence":{"types":["*"]},"account_data":{"not_types":["a*b*c"]},"room":{"timeline":{"contains_url":true}}}`,
		`[]`, `null`, `{"room":{"timeline":{"limit":1e400}}}`, `{"room":{"timeline":{"limit":"5"}}}`,
		`{"room":{"timeline":{"limit":99999999999}}}`,
	} {
		f.Add(s)
	}
	events := []*storage.Event{
		{Type: "m.room.message", Sender: "@a:b", RoomID: "!r:b", JSON: []byte(`{"content":{"url":"mxc://b/x"}}`)},
		{Type: "m.room.member", Sender: "@c:d", RoomID: "!s:b", JSON: []byte(`{"content":{"membership":"join"}}`)},
		{Type: "", Sender: "", RoomID: "", JSON: []byte(`not json`)},
	}
	f.Fuzz(func(t *testing.T, raw string) {
		stored, errStored := accounts.ParseFilter([]byte(raw))
		flt, err := ParseFilter(raw)
		if (errStored == nil) != (err == nil) && strings.TrimSpace(raw) != "" {
			t.Fatalf("POST /filter says %v, /sync says %v, for %q", errStored, err, raw)
		}
		for _, e := range []error{errStored, err} {
			if c := matrixCode(e); e != nil && c != "M_BAD_JSON" && c != "M_NOT_JSON" && c != "M_INVALID_PARAM" {
				t.Fatalf("ParseFilter(%q): %v", raw, e)
			}
		}
		if err != nil {
			return
		}
		_ = stored
		if l := flt.TimelineLimit(); l < 1 || l > maxTimelineLimit {
			t.Fatalf("TimelineLimit %d for %q", l, raw)
		}
		flt.LazyLoadMembers()
		flt.IncludeRedundantMembers()
		flt.ThreadNotifications()
		r := flt.room()
		for _, e := range events {
			flt.RoomAllowed(e.RoomID)
			for _, p := range []*mautrix.FilterPart{r.AccountData, r.Ephemeral, r.State, r.Timeline, flt.AccountData, flt.Presence} {
				allowsEvent(p, e)
				typeAllowed(p, e.Type)
				restrictive(p)
				if p == nil {
					continue
				}
				for _, pat := range append(p.Types, p.NotTypes...) {
					if !utf8.ValidString(pat.Type) {
						t.Fatalf("accepted a filter with invalid UTF-8: %q", raw)
					}
					if got, want := typeMatches(pat.Type, e.Type), wildcard(pat.Type).MatchString(e.Type); got != want {
						t.Fatalf("typeMatches(%q, %q) = %v, want %v", pat.Type, e.Type, got, want)
					}
				}
			}
		}
	})
}

// FuzzTypeMatches checks the '*' wildcard against a regular expression.
func FuzzTypeMatches(f *testing.F) {
	f.Add("m.room.*", "m.room.member")
	f.Add("a*b*c", "abbc")
	f.Add("*a*", "")
	f.Add("ab*b", "ab")
	f.Fuzz(func(t *testing.T, pattern, typ string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(typ) {
			return // never reaches a filter: the JSON edge refuses invalid UTF-8
		}
		if got, want := typeMatches(pattern, typ), wildcard(pattern).MatchString(typ); got != want {
			t.Fatalf("typeMatches(%q, %q) = %v, want %v", pattern, typ, got, want)
		}
	})
}

// wildcard is the reference: '*' matches any run of characters, the rest literally.
func wildcard(pattern string) *regexp.Regexp {
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`(?s)\A` + strings.Join(parts, ".*") + `\z`)
}
