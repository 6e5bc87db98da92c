// Package userexport writes everything the server holds about one local
// user as a zip of JSON files (myelin export-user; the format is documented
// in docs/export-user.md). It reads the store only, so it runs beside a
// live server, and streams: the user's messages and media are read and
// written a page at a time, so memory stays bounded however many there are.
package userexport

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/storage"
)

// FormatVersion is manifest.json's format_version.
const FormatVersion = 1

// pageSize is how many events or uploads are read at a time (a variable
// for the tests).
var pageSize = 500

// Store is what an export reads; *storage.DB satisfies it.
type Store interface {
	clientevent.Store
	GetUser(ctx context.Context, userID string) (*storage.User, error)
	IsErased(ctx context.Context, userID string) (bool, error)
	ListDevices(ctx context.Context, userID string) ([]storage.Device, error)
	AccountDataSince(ctx context.Context, userID string, fromPos, toPos int64) ([]storage.AccountData, error)
	PushRules(ctx context.Context, userID string) (string, int64, error)
	Pushers(ctx context.Context, userID string) ([]storage.Pusher, error)
	FiltersOf(ctx context.Context, userID string) ([]storage.Filter, error)
	RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]storage.Membership, error)
	EventsBySender(ctx context.Context, userID string, afterPos int64, afterID string, limit int) ([]*storage.Event, error)
	UploadsOf(ctx context.Context, userID, afterID string, limit int) ([]storage.MediaRow, error)
}

// Blobs opens the content of an upload by its SHA-256 (the media
// repository's blob store, mediaapi.OpenBlob).
type Blobs interface {
	Open(sha256 string) (io.ReadCloser, error)
}

// Counts is what an export wrote.
type Counts struct {
	Messages int `json:"messages"`
	Media    int `json:"media"`
	Rooms    int `json:"rooms"`
	Devices  int `json:"devices"`
}

// Export writes the archive of userID to w. A user the store does not hold
// is storage.ErrNotFound.
func Export(ctx context.Context, store Store, blobs Blobs, userID string, w io.Writer) (Counts, error) {
	var n Counts
	u, err := store.GetUser(ctx, userID)
	if err != nil {
		return n, fmt.Errorf("reading user %s: %w", userID, err)
	}
	zw := zip.NewWriter(w)
	e := exporter{ctx: ctx, store: store, blobs: blobs, user: u, zw: zw}
	for _, part := range []func(*Counts) error{e.profile, e.devices, e.accountData, e.pushRules, e.pushers, e.filters, e.rooms, e.messages, e.media} {
		if err := part(&n); err != nil {
			return n, err
		}
	}
	if err := e.writeJSON("manifest.json", map[string]any{
		"format": "myelin-user-export", "format_version": FormatVersion, "user_id": userID,
		"exported_ts": time.Now().UnixMilli(), "counts": n,
		"files": []string{"profile.json", "devices.json", "account_data.json", "push_rules.json", "pushers.json",
			"filters.json", "rooms.json", "messages.jsonl", "media.jsonl", "media/"},
	}); err != nil {
		return n, err
	}
	return n, zw.Close()
}

type exporter struct {
	ctx   context.Context
	store Store
	blobs Blobs
	user  *storage.User
	zw    *zip.Writer
}

func (e *exporter) writeJSON(name string, v any) error {
	f, err := e.zw.Create(name)
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

func (e *exporter) profile(*Counts) error {
	erased, err := e.store.IsErased(e.ctx, e.user.UserID)
	if err != nil {
		return err
	}
	fields := e.user.ProfileFields
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	// Never the password hash.
	return e.writeJSON("profile.json", map[string]any{
		"user_id": e.user.UserID, "displayname": e.user.DisplayName, "avatar_url": e.user.AvatarURL,
		"profile_fields": fields, "created_ts": e.user.CreatedTS, "admin": e.user.IsAdmin,
		"deactivated": e.user.Deactivated, "erased": erased,
	})
}

func (e *exporter) devices(n *Counts) error {
	ds, err := e.store.ListDevices(e.ctx, e.user.UserID)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		// Never tokens (or their hashes) and no keys.
		out = append(out, map[string]any{"device_id": d.DeviceID, "display_name": d.DisplayName,
			"created_ts": d.CreatedTS, "last_seen_ts": d.LastSeenTS, "last_seen_ip": d.LastSeenIP})
	}
	n.Devices = len(out)
	return e.writeJSON("devices.json", out)
}

func (e *exporter) accountData(*Counts) error {
	ads, err := e.store.AccountDataSince(e.ctx, e.user.UserID, storage.MinStreamPos, -storage.MinStreamPos)
	if err != nil {
		return err
	}
	global := map[string]json.RawMessage{}
	rooms := map[string]map[string]json.RawMessage{}
	for _, a := range ads {
		if a.RoomID == "" {
			global[a.Type] = a.Content
			continue
		}
		if rooms[a.RoomID] == nil {
			rooms[a.RoomID] = map[string]json.RawMessage{}
		}
		rooms[a.RoomID][a.Type] = a.Content
	}
	return e.writeJSON("account_data.json", map[string]any{"global": global, "rooms": rooms})
}

func (e *exporter) pushRules(*Counts) error {
	rules, _, err := e.store.PushRules(e.ctx, e.user.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	raw := json.RawMessage("{}")
	if rules != "" && json.Valid([]byte(rules)) {
		raw = json.RawMessage(rules)
	}
	return e.writeJSON("push_rules.json", raw)
}

func (e *exporter) pushers(*Counts) error {
	ps, err := e.store.Pushers(e.ctx, e.user.UserID)
	if err != nil {
		return err
	}
	out := make([]json.RawMessage, 0, len(ps))
	for _, p := range ps {
		if json.Valid([]byte(p.JSON)) {
			out = append(out, json.RawMessage(p.JSON))
		}
	}
	return e.writeJSON("pushers.json", out)
}

func (e *exporter) filters(*Counts) error {
	fs, err := e.store.FiltersOf(e.ctx, e.user.UserID)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(fs))
	for _, f := range fs {
		out = append(out, map[string]any{"filter_id": fmt.Sprint(f.ID), "filter": f.Filter})
	}
	return e.writeJSON("filters.json", out)
}

func (e *exporter) rooms(n *Counts) error {
	ms, err := e.store.RoomsOfUser(e.ctx, e.user.UserID)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		out = append(out, map[string]any{"room_id": m.RoomID, "membership": m.Membership, "event_id": m.EventID})
	}
	n.Rooms = len(out)
	return e.writeJSON("rooms.json", out)
}

// messages writes every event the user sent, one client-format event a
// line, a page at a time.
func (e *exporter) messages(n *Counts) error {
	f, err := e.zw.Create("messages.jsonl")
	if err != nil {
		return err
	}
	viewer := &clientevent.Viewer{UserID: e.user.UserID}
	pos, after := storage.MinStreamPos, ""
	for {
		evs, err := e.store.EventsBySender(e.ctx, e.user.UserID, pos, after, pageSize)
		if err != nil {
			return err
		}
		rendered, err := clientevent.Render(e.ctx, e.store, viewer, evs)
		if err != nil {
			return fmt.Errorf("rendering the events of %s: %w", e.user.UserID, err)
		}
		for _, r := range rendered {
			if _, err := f.Write(append(r, '\n')); err != nil {
				return fmt.Errorf("writing messages.jsonl: %w", err)
			}
		}
		n.Messages += len(evs)
		if len(evs) < pageSize {
			return nil
		}
		last := evs[len(evs)-1]
		pos, after = last.StreamPos, last.EventID
	}
}

// media writes the metadata of the user's uploads (media.jsonl) and each
// one's content (media/<media_id>).
func (e *exporter) media(n *Counts) error {
	// The index is written first, then the files: a zip entry is written
	// whole before the next starts, so the pages are read twice.
	idx, err := e.zw.Create("media.jsonl")
	if err != nil {
		return err
	}
	err = e.eachUpload(func(m storage.MediaRow) error {
		line, err := json.Marshal(map[string]any{"mxc": "mxc://" + m.Origin + "/" + m.MediaID, "media_id": m.MediaID,
			"content_type": m.ContentType, "size": m.Size, "filename": m.Filename, "sha256": m.SHA256,
			"created_ts": m.CreatedTS, "uploaded_ts": m.UploadedTS, "file": fileName(m)})
		if err != nil {
			return err
		}
		_, err = idx.Write(append(line, '\n'))
		return err
	})
	if err != nil {
		return fmt.Errorf("writing media.jsonl: %w", err)
	}
	return e.eachUpload(func(m storage.MediaRow) error {
		if m.SHA256 == "" {
			return nil // created, never uploaded
		}
		r, err := e.blobs.Open(m.SHA256)
		if err != nil {
			return fmt.Errorf("opening the content of %s: %w", m.MediaID, err)
		}
		defer r.Close()
		f, err := e.zw.Create(fileName(m))
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			return fmt.Errorf("writing %s: %w", fileName(m), err)
		}
		n.Media++
		return nil
	})
}

func fileName(m storage.MediaRow) string {
	if m.SHA256 == "" {
		return ""
	}
	return "media/" + m.MediaID
}

func (e *exporter) eachUpload(fn func(storage.MediaRow) error) error {
	after := ""
	for {
		ms, err := e.store.UploadsOf(e.ctx, e.user.UserID, after, pageSize)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if err := fn(m); err != nil {
				return err
			}
		}
		if len(ms) < pageSize {
			return nil
		}
		after = ms[len(ms)-1].MediaID
	}
}
