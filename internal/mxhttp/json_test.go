package mxhttp

import (
	"errors"
	"testing"
)

func TestHasNULEscape(t *testing.T) {
	for body, want := range map[string]bool{
		`{"a":"\u0000"}`:     true,
		`{"a":"x\u0000y"}`:   true,
		`{"a":"\\u0000"}`:    false, // the text \u0000, not a NUL
		`{"a":"\\\u0000"}`:   true,  // a backslash, then a NUL
		`{"a":"u0000"}`:      false,
		`{"a":"\u00001"}`:    true,
		`{"u0000":"\u0001"}`: false,
	} {
		if got := HasNULEscape([]byte(body)); got != want {
			t.Errorf("HasNULEscape(%s) = %v, want %v", body, got, want)
		}
	}
}

func TestDecodeJSONErrors(t *testing.T) {
	var v struct {
		N int `json:"n"`
	}
	for body, code := range map[string]string{
		`not json`:        "M_NOT_JSON",
		`{"n": "x"}`:      "M_BAD_JSON",
		`{"s": "\u0000"}`: "M_BAD_JSON",
		`[1,2]`:           "M_BAD_JSON",
	} {
		err := DecodeJSON([]byte(body), &v)
		var mErr *Error
		if !errors.As(err, &mErr) || mErr.Code != code {
			t.Errorf("DecodeJSON(%s) = %v, want %s", body, err, code)
		}
	}
	if err := DecodeJSON([]byte("  "), &v); err != nil {
		t.Errorf("empty body: %v", err)
	}
}
