package storage

import (
	"context"
	"errors"
	"fmt"
)

// Content repository metadata (mediaapi). The bytes are files named by their
// SHA-256; these rows say which media ID (and thumbnail) is which blob. A row
// is written only after its blob is durably in place.

// MediaRow is one media ID. SHA256 is "" while the ID was created for an
// asynchronous upload and has no content yet.
type MediaRow struct {
	Origin      string
	MediaID     string
	Uploader    string
	ContentType string
	Size        int64
	Filename    string
	SHA256      string
	CreatedTS   int64
	UploadedTS  int64
	ExpiresTS   int64
}

// ErrMediaUploaded is returned when content is uploaded to a media ID that
// already has content.
var ErrMediaUploaded = errors.New("media already uploaded")

// ErrMediaQuota is returned when an upload would take its uploader past
// their byte quota.
var ErrMediaQuota = errors.New("media quota exceeded")

// InsertMedia stores the row of a completed upload. With quota > 0 and an
// uploader, it returns ErrMediaQuota (storing nothing) when the uploader's
// media would then total more than quota bytes.
func (db *DB) InsertMedia(ctx context.Context, m MediaRow, quota int64) error {
	err := db.Tx(ctx, func(tx Querier) error {
		if err := checkQuota(ctx, tx, m.Uploader, m.Size, quota); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO media (origin, media_id, uploader, content_type, size, filename, sha256, created_ts, uploaded_ts, expires_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)`,
			m.Origin, m.MediaID, m.Uploader, m.ContentType, m.Size, m.Filename, m.SHA256, m.CreatedTS, m.UploadedTS)
		return err
	})
	if errors.Is(err, ErrMediaQuota) {
		return ErrMediaQuota
	} else if err != nil {
		return fmt.Errorf("inserting media %s/%s: %w", m.Origin, m.MediaID, err)
	}
	return nil
}

// checkQuota locks uploader's media (lockUploader) and returns ErrMediaQuota
// when adding size bytes would take them past quota (0: unlimited).
func checkQuota(ctx context.Context, tx Querier, uploader string, size, quota int64) error {
	if quota <= 0 || uploader == "" {
		return nil
	}
	if err := lockUploader(ctx, tx, uploader); err != nil {
		return err
	}
	used, err := mediaUsage(ctx, tx, uploader)
	if err != nil {
		return err
	}
	if used+size > quota {
		return ErrMediaQuota
	}
	return nil
}

func mediaUsage(ctx context.Context, q Querier, uploader string) (int64, error) {
	var used int64
	if err := q.QueryRow(ctx, `SELECT COALESCE(SUM(size), 0) FROM media WHERE uploader = $1`, uploader).Scan(&used); err != nil {
		return 0, fmt.Errorf("reading media usage of %s: %w", uploader, err)
	}
	return used, nil
}

// MediaUsage is the total size of the media uploader has uploaded (their
// quota usage).
func (db *DB) MediaUsage(ctx context.Context, uploader string) (int64, error) {
	return mediaUsage(ctx, db, uploader)
}

// CreatePendingMedia reserves a media ID for an asynchronous upload, unless
// the uploader already has maxPending unexpired pending IDs (ok false then).
// Expired pending IDs of the uploader are deleted on the way.
func (db *DB) CreatePendingMedia(ctx context.Context, origin, mediaID, uploader string, now, expires int64, maxPending int) (ok bool, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		if err := lockUploader(ctx, tx, uploader); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM media WHERE uploader = $1 AND uploaded_ts = 0 AND expires_ts <= $2`, uploader, now); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE uploader = $1 AND uploaded_ts = 0`, uploader).Scan(&n); err != nil {
			return err
		}
		if n >= maxPending {
			return nil
		}
		ok = true
		_, err := tx.Exec(ctx, `INSERT INTO media (origin, media_id, uploader, created_ts, expires_ts) VALUES ($1, $2, $3, $4, $5)`,
			origin, mediaID, uploader, now, expires)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("creating pending media %s/%s: %w", origin, mediaID, err)
	}
	return ok, nil
}

// lockUploader serializes, per uploader, the transactions that check and then
// change the uploader's media: the upsert locks the uploader's row in
// media_uploader_locks until the transaction ends (PostgreSQL; SQLite has one
// writer). It must be the transaction's first statement on media.
func lockUploader(ctx context.Context, tx Querier, uploader string) error {
	_, err := tx.Exec(ctx, `INSERT INTO media_uploader_locks (uploader) VALUES ($1)
		ON CONFLICT (uploader) DO UPDATE SET uploader = excluded.uploader`, uploader)
	if err != nil {
		return fmt.Errorf("locking media of %s: %w", uploader, err)
	}
	return nil
}

// CompletePendingMedia fills a pending media ID with its uploaded content. It
// returns ErrNotFound when the ID does not exist, has expired or belongs to
// another user (the caller tells these apart with GetMedia when it must),
// ErrMediaUploaded when it already has content, and ErrMediaQuota when the
// content would take the uploader past quota bytes (0: unlimited).
func (db *DB) CompletePendingMedia(ctx context.Context, m MediaRow, quota int64) error {
	var done bool
	err := db.Tx(ctx, func(tx Querier) error {
		var uploader, sha string
		var expires int64
		err := tx.QueryRow(ctx, `SELECT uploader, sha256, expires_ts FROM media WHERE origin = $1 AND media_id = $2 AND erased_ts = 0`,
			m.Origin, m.MediaID).Scan(&uploader, &sha, &expires)
		if err != nil {
			return err
		}
		if sha != "" {
			done = true
			return nil
		}
		if uploader != m.Uploader || expires <= m.UploadedTS {
			return ErrNotFound
		}
		if err := checkQuota(ctx, tx, m.Uploader, m.Size, quota); err != nil {
			return err
		}
		// A concurrent upload to the same ID may have filled it since the
		// SELECT (PostgreSQL re-checks the WHERE after waiting for its lock):
		// then nothing is updated and this upload lost.
		n, err := tx.Exec(ctx, `UPDATE media SET content_type = $3, size = $4, filename = $5, sha256 = $6, uploaded_ts = $7, expires_ts = 0
			WHERE origin = $1 AND media_id = $2 AND sha256 = ''`,
			m.Origin, m.MediaID, m.ContentType, m.Size, m.Filename, m.SHA256, m.UploadedTS)
		if err == nil && n == 0 {
			done = true
		}
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrMediaQuota) {
			return err
		}
		return fmt.Errorf("completing media %s/%s: %w", m.Origin, m.MediaID, err)
	}
	if done {
		return ErrMediaUploaded
	}
	return nil
}

// GetMedia returns the row of a media ID, or ErrNotFound (an erased upload too).
func (db *DB) GetMedia(ctx context.Context, origin, mediaID string) (*MediaRow, error) {
	m := MediaRow{Origin: origin, MediaID: mediaID}
	err := db.QueryRow(ctx, `SELECT uploader, content_type, size, filename, sha256, created_ts, uploaded_ts, expires_ts
		FROM media WHERE origin = $1 AND media_id = $2 AND erased_ts = 0`, origin, mediaID).
		Scan(&m.Uploader, &m.ContentType, &m.Size, &m.Filename, &m.SHA256, &m.CreatedTS, &m.UploadedTS, &m.ExpiresTS)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("reading media %s/%s: %w", origin, mediaID, err)
	}
	return &m, nil
}

// MediaThumbnail is a generated thumbnail of a media ID.
type MediaThumbnail struct {
	Origin, MediaID string
	Width, Height   int
	Method          string
	Animated        bool
	ContentType     string
	Size            int64
	SHA256          string
	CreatedTS       int64
}

// GetMediaThumbnail returns a cached thumbnail, or ErrNotFound.
func (db *DB) GetMediaThumbnail(ctx context.Context, origin, mediaID string, width, height int, method string, animated bool) (*MediaThumbnail, error) {
	t := MediaThumbnail{Origin: origin, MediaID: mediaID, Width: width, Height: height, Method: method, Animated: animated}
	err := db.QueryRow(ctx, `SELECT content_type, size, sha256, created_ts FROM media_thumbnails
		WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5 AND animated = $6`,
		origin, mediaID, width, height, method, animated).Scan(&t.ContentType, &t.Size, &t.SHA256, &t.CreatedTS)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("reading thumbnail of %s/%s: %w", origin, mediaID, err)
	}
	return &t, nil
}

// PutMediaThumbnail records a generated thumbnail (a concurrent identical one
// wins silently). A thumbnail of cached remote media, unless it is the
// original itself, adds to the remote cache's running total in the same
// transaction.
func (db *DB) PutMediaThumbnail(ctx context.Context, t MediaThumbnail) error {
	err := db.Tx(ctx, func(tx Querier) error {
		n, err := tx.Exec(ctx, `INSERT INTO media_thumbnails (origin, media_id, width, height, method, animated, content_type, size, sha256, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
			t.Origin, t.MediaID, t.Width, t.Height, t.Method, t.Animated, t.ContentType, t.Size, t.SHA256, t.CreatedTS)
		if err != nil || n == 0 {
			return err
		}
		var counted bool
		err = tx.QueryRow(ctx, `SELECT remote AND sha256 <> $3 FROM media WHERE origin = $1 AND media_id = $2`,
			t.Origin, t.MediaID, t.SHA256).Scan(&counted)
		if errors.Is(err, ErrNotFound) || (err == nil && !counted) {
			return nil
		} else if err != nil {
			return err
		}
		return addRemoteCacheBytes(ctx, tx, t.Size)
	})
	if err != nil {
		return fmt.Errorf("recording thumbnail of %s/%s: %w", t.Origin, t.MediaID, err)
	}
	return nil
}
