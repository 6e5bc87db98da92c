package mediaapi

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/config"
)

type fakeRemote struct{ filename string }

func (f fakeRemote) FetchMedia(context.Context, string, string, int64, time.Duration) (string, string, io.ReadCloser, error) {
	return "text/plain", f.filename, io.NopCloser(strings.NewReader("remote bytes")), nil
}

func (f fakeRemote) FetchThumbnail(context.Context, string, string, ThumbnailRequest, int64, time.Duration) (string, io.ReadCloser, error) {
	return "", nil, ErrRemoteNotFound
}

func TestRemoteFilenameCleaned(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"cat.png", "cat.png"},
		{"evil\r\nSet-Cookie: x=1.txt", "evilSet-Cookie: x=1.txt"},
		{"nul\x00\x7fname", "nulname"},
		{"\xffbad", "bad"},
		{strings.Repeat("a", 300), strings.Repeat("a", 255)},
		{strings.Repeat("é", 200), strings.Repeat("é", 127)}, // cut on a rune boundary
	} {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.ServerName = "here.example"
		s, err := New(Options{Store: newMemStore(), Config: cfg, Remote: fakeRemote{filename: tc.name}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.Lookup(context.Background(), "there.example", "abc", 0, true)
		if err != nil {
			t.Fatalf("%q: %v", tc.name, err)
		}
		if m.Filename != tc.want {
			t.Errorf("remote file name %q stored as %q, want %q", tc.name, m.Filename, tc.want)
		}
	}
}

func TestStartupSweepsTmp(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	tmp := filepath.Join(cfg.DataDir, "media", "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(tmp, "upload-123")
	if err := os.WriteFile(stale, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Store: newMemStore(), Config: cfg}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temporary upload survived start-up: %v", err)
	}
}
