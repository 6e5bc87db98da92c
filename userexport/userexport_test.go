package userexport

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/mediaapi"
	"github.com/myelin-chat/myelin/storage"
)

func TestMain(m *testing.M) { testserver.Main(m) }

type blobDir string

func (d blobDir) Open(sum string) (io.ReadCloser, error) { return mediaapi.OpenBlob(string(d), sum) }

// TestExportPaged: on both backends, with pages of 3, every message and
// upload comes out once and in order; an unknown user is ErrNotFound.
func TestExportPaged(t *testing.T) {
	old := pageSize
	pageSize = 3
	t.Cleanup(func() { pageSize = old })
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			srv := testserver.Start(t, backend, testserver.Options{})
			alice := srv.Register(t, "alice")
			room, err := alice.CreateRoom(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			const n = 10
			for i := range n {
				if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("m%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			var uploads [][]byte
			for i := range 7 {
				b := []byte(fmt.Sprintf("file %d", i))
				if _, err := alice.UploadBytes(ctx, b, "text/plain"); err != nil {
					t.Fatal(err)
				}
				uploads = append(uploads, b)
			}
			var buf bytes.Buffer
			counts, err := Export(ctx, srv.DB, blobDir(srv.Config.DataDir), alice.UserID.String(), &buf)
			if err != nil {
				t.Fatal(err)
			}
			zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				t.Fatal(err)
			}
			files := map[string][]byte{}
			for _, f := range zr.File {
				r, _ := f.Open()
				files[f.Name], _ = io.ReadAll(r)
				r.Close()
			}
			var bodies []string
			sc := bufio.NewScanner(bytes.NewReader(files["messages.jsonl"]))
			lines := 0
			for sc.Scan() {
				lines++
				var e event.Event
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					t.Fatal(err)
				}
				if e.Type == event.EventMessage {
					bodies = append(bodies, e.Content.Raw["body"].(string))
				}
			}
			if len(bodies) != n || bodies[0] != "m0" || bodies[n-1] != fmt.Sprintf("m%d", n-1) || counts.Messages != lines {
				t.Errorf("messages: %v (%d lines, counted %d)", bodies, lines, counts.Messages)
			}
			seen := map[string]bool{}
			sc = bufio.NewScanner(bytes.NewReader(files["media.jsonl"]))
			for sc.Scan() {
				var m struct{ File string }
				_ = json.Unmarshal(sc.Bytes(), &m)
				seen[string(files[m.File])] = true
			}
			for _, u := range uploads {
				if !seen[string(u)] {
					t.Errorf("upload %q missing", u)
				}
			}
			if counts.Media != len(uploads) {
				t.Errorf("media counted %d, want %d", counts.Media, len(uploads))
			}
			if _, err := Export(ctx, srv.DB, blobDir(srv.Config.DataDir), "@nobody:localhost", io.Discard); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("unknown user: %v", err)
			}
		})
	}
}
