package homeserver

import (
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
)

// The legacy endpoint is asked only when the federation one is unknown to
// the server, never when the server says the media does not exist.
func TestLegacyMediaFallback(t *testing.T) {
	matrixErr := func(code string) error {
		return mautrix.HTTPError{RespError: &mautrix.RespError{ErrCode: code}}
	}
	for _, tc := range []struct {
		status int
		err    error
		want   bool
	}{
		{404, matrixErr("M_UNRECOGNIZED"), true},
		{404, mautrix.HTTPError{}, true}, // a proxy's 404 page: no Matrix error
		{400, matrixErr("M_UNRECOGNIZED"), true},
		{405, matrixErr("M_UNRECOGNIZED"), true},
		{501, errors.New("x"), true},
		{404, matrixErr("M_NOT_FOUND"), false},
		{400, matrixErr("M_INVALID_PARAM"), false},
		{403, matrixErr("M_FORBIDDEN"), false},
		{429, matrixErr("M_LIMIT_EXCEEDED"), false},
		{500, matrixErr("M_UNKNOWN"), false},
		{502, errors.New("x"), false},
	} {
		if got := legacyMediaFallback(tc.status, tc.err); got != tc.want {
			t.Errorf("status %d, %v: fallback %v, want %v", tc.status, tc.err, got, tc.want)
		}
	}
}

func TestDispositionFilename(t *testing.T) {
	for in, want := range map[string]string{
		`attachment; filename="old.txt"`:            "old.txt",
		`inline; filename=cat.png`:                  "cat.png",
		`inline; filename*=utf-8''%F0%9F%90%94.png`: "\U0001F414.png",
		`attachment`:                         "",
		``:                                   "",
		`attachment; filename="unterminated`: "",
	} {
		if got := dispositionFilename(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestCheckMediaURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://cdn.example/a": true, "http://cdn.example/a": true,
		"ftp://cdn.example/a": false, "file:///etc/passwd": false, "https://user:pw@cdn.example/a": false,
	} {
		req, _ := http.NewRequest("GET", raw, nil)
		if err := checkMediaURL(req.URL); (err == nil) != ok {
			t.Errorf("%s: %v", raw, err)
		}
	}
}
