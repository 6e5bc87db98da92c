package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/mediaapi"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/userexport"
)

// exportUserCmd: myelin export-user @user:server [--out FILE]. It reads the
// store and the media directory only, so it may run beside the server.
func exportUserCmd(args []string) error {
	fs := flag.NewFlagSet("export-user", flag.ExitOnError)
	var f serverFlags
	f.register(fs)
	out := fs.String("out", "", "archive to write (default: <localpart>-export.zip)")
	// The user ID may come before or after the flags.
	var user string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] == '@' {
		user, args = args[0], args[1:]
	}
	_ = fs.Parse(args)
	if user == "" && fs.NArg() > 0 {
		user = fs.Arg(0)
	}
	if user == "" {
		return errors.New("usage: myelin export-user @user:server [--out FILE]")
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	localpart, server, err := id.UserID(user).Parse()
	if err != nil {
		return fmt.Errorf("invalid user ID %q: %w", user, err)
	}
	if server != cfg.ServerName {
		return fmt.Errorf("%s is not a user of this server (%s)", user, cfg.ServerName)
	}
	if *out == "" {
		*out = localpart + "-export.zip"
	}
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg.DatabaseURL(), 2)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.GetUser(ctx, user); errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("no user %s on this server", user)
	} else if err != nil {
		return err
	}
	// Written to a temporary file and renamed: never half an archive under the name.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".export-*.zip")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	n, err := userexport.Export(ctx, db, blobDir(cfg.DataDir), user, w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("exporting %s: %w", user, err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Printf("exported %s to %s: %d messages, %d media files, %d rooms, %d devices\n", user, *out, n.Messages, n.Media, n.Rooms, n.Devices)
	return nil
}

// blobDir opens uploads in the media directory under the data dir.
type blobDir string

func (d blobDir) Open(sum string) (io.ReadCloser, error) { return mediaapi.OpenBlob(string(d), sum) }
