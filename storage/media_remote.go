package storage

import (
	"context"
	"errors"
	"fmt"
)

// The remote media cache (mediaapi): other servers' media, stored as media
// rows flagged remote, with the time they were last served; the least
// recently used are evicted when the cache is over its budget.

// InsertRemoteMedia caches another server's media item (a concurrent
// identical insert wins silently: the content is the same). A placeholder
// row (InsertRemoteMediaPlaceholder: only thumbnails of the item fetched so
// far) is filled in. The cache's running total grows in the same transaction.
func (db *DB) InsertRemoteMedia(ctx context.Context, m MediaRow) error {
	err := db.Tx(ctx, func(tx Querier) error {
		var sha string
		err := tx.QueryRow(ctx, `SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2 AND remote`, m.Origin, m.MediaID).Scan(&sha)
		switch {
		case errors.Is(err, ErrNotFound):
			n, err := tx.Exec(ctx, `INSERT INTO media (origin, media_id, uploader, content_type, size, filename, sha256, created_ts, uploaded_ts, expires_ts, remote, last_access_ts)
				VALUES ($1, $2, '', $3, $4, $5, $6, $7, $8, 0, TRUE, $8) ON CONFLICT DO NOTHING`,
				m.Origin, m.MediaID, m.ContentType, m.Size, m.Filename, m.SHA256, m.CreatedTS, m.UploadedTS)
			if err != nil || n == 0 {
				return err
			}
			return addRemoteCacheBytes(ctx, tx, m.Size)
		case err != nil:
			return err
		case sha != "":
			return nil // already cached
		}
		// Fill the placeholder. Its thumbnails identical to the original
		// stop counting on their own (the original counts once).
		var same int64
		if err := tx.QueryRow(ctx, `SELECT COALESCE(SUM(size), 0) FROM media_thumbnails
			WHERE origin = $1 AND media_id = $2 AND sha256 = $3`, m.Origin, m.MediaID, m.SHA256).Scan(&same); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, `UPDATE media SET content_type = $3, size = $4, filename = $5, sha256 = $6, created_ts = $7, uploaded_ts = $8
			WHERE origin = $1 AND media_id = $2 AND remote AND sha256 = ''`,
			m.Origin, m.MediaID, m.ContentType, m.Size, m.Filename, m.SHA256, m.CreatedTS, m.UploadedTS)
		if err != nil || n == 0 {
			return err
		}
		return addRemoteCacheBytes(ctx, tx, m.Size-same)
	})
	if err != nil {
		return fmt.Errorf("caching remote media %s/%s: %w", m.Origin, m.MediaID, err)
	}
	return nil
}

// InsertRemoteMediaPlaceholder records another server's media item whose
// content is not cached (empty sha256, size 0), so that thumbnails fetched
// from its server can be cached, counted and evicted with it. A no-op when
// the item is already known.
func (db *DB) InsertRemoteMediaPlaceholder(ctx context.Context, origin, mediaID string, now int64) error {
	_, err := db.Exec(ctx, `INSERT INTO media (origin, media_id, uploader, content_type, size, filename, sha256, created_ts, uploaded_ts, expires_ts, remote, last_access_ts)
		VALUES ($1, $2, '', '', 0, '', '', $3, $3, 0, TRUE, $3) ON CONFLICT DO NOTHING`, origin, mediaID, now)
	if err != nil {
		return fmt.Errorf("recording remote media %s/%s: %w", origin, mediaID, err)
	}
	return nil
}

// addRemoteCacheBytes moves the cache's running total by delta.
func addRemoteCacheBytes(ctx context.Context, tx Querier, delta int64) error {
	if delta == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE media_remote_cache_size SET bytes = bytes + $1 WHERE id = 1`, delta); err != nil {
		return fmt.Errorf("updating the remote media cache size: %w", err)
	}
	return nil
}

// TouchRemoteMedia records that a cached remote item was served at now. It
// writes only when the recorded time is older than now-granularity, so a
// popular file costs one write per granularity, not one per download.
func (db *DB) TouchRemoteMedia(ctx context.Context, origin, mediaID string, now, granularity int64) error {
	_, err := db.Exec(ctx, `UPDATE media SET last_access_ts = $3
		WHERE origin = $1 AND media_id = $2 AND remote AND last_access_ts < $4`, origin, mediaID, now, now-granularity)
	if err != nil {
		return fmt.Errorf("touching remote media %s/%s: %w", origin, mediaID, err)
	}
	return nil
}

// RemoteMediaBytes is the size of the remote media cache: the cached
// originals and the thumbnails made of them (the running total, one row).
func (db *DB) RemoteMediaBytes(ctx context.Context) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT bytes FROM media_remote_cache_size WHERE id = 1`).Scan(&n); err != nil {
		return 0, fmt.Errorf("reading the remote media cache size: %w", err)
	}
	return n, nil
}

// SumRemoteMediaBytes computes the cache's size from its rows (what the
// running total must equal): a full scan, for checks, not for every fetch.
func (db *DB) SumRemoteMediaBytes(ctx context.Context) (int64, error) {
	return sumRemoteMediaBytes(ctx, db)
}

func sumRemoteMediaBytes(ctx context.Context, q Querier) (int64, error) {
	var media, thumbs int64
	if err := q.QueryRow(ctx, `SELECT COALESCE(SUM(size), 0) FROM media WHERE remote`).Scan(&media); err != nil {
		return 0, fmt.Errorf("summing the remote media cache: %w", err)
	}
	if err := q.QueryRow(ctx, `SELECT COALESCE(SUM(t.size), 0) FROM media_thumbnails t
		JOIN media m ON m.origin = t.origin AND m.media_id = t.media_id WHERE m.remote AND t.sha256 <> m.sha256`).Scan(&thumbs); err != nil {
		return 0, fmt.Errorf("summing the remote thumbnail cache: %w", err)
	}
	return media + thumbs, nil
}

// RecountRemoteMediaBytes sets the running total to the sum of the rows
// (startup repair, should anything have changed the rows without it).
func (db *DB) RecountRemoteMediaBytes(ctx context.Context) (int64, error) {
	var n int64
	err := db.Tx(ctx, func(tx Querier) error {
		var err error
		if n, err = sumRemoteMediaBytes(ctx, tx); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE media_remote_cache_size SET bytes = $1 WHERE id = 1`, n)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("recounting the remote media cache: %w", err)
	}
	return n, nil
}

// LeastRecentlyUsedRemoteMedia returns up to limit cached remote items, the
// least recently served first.
func (db *DB) LeastRecentlyUsedRemoteMedia(ctx context.Context, limit int) ([]MediaRow, error) {
	rows, err := db.Query(ctx, `SELECT origin, media_id, size, sha256 FROM media WHERE remote
		ORDER BY last_access_ts, origin, media_id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("listing remote media: %w", err)
	}
	defer rows.Close()
	var out []MediaRow
	for rows.Next() {
		var m MediaRow
		if err := rows.Scan(&m.Origin, &m.MediaID, &m.Size, &m.SHA256); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteRemoteMedia drops a cached remote item and its thumbnails, and
// returns the blobs (SHA-256s) no row names any more, which the caller may
// delete. Local media is never touched.
func (db *DB) DeleteRemoteMedia(ctx context.Context, origin, mediaID string) (orphans []string, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		orphans = nil
		var sha string
		var size, thumbBytes int64
		if err := tx.QueryRow(ctx, `SELECT sha256, size FROM media WHERE origin = $1 AND media_id = $2 AND remote`, origin, mediaID).Scan(&sha, &size); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT COALESCE(SUM(size), 0) FROM media_thumbnails
			WHERE origin = $1 AND media_id = $2 AND sha256 <> $3`, origin, mediaID, sha).Scan(&thumbBytes); err != nil {
			return err
		}
		if err := addRemoteCacheBytes(ctx, tx, -(size + thumbBytes)); err != nil {
			return err
		}
		orphans, err = deleteMediaRows(ctx, tx, origin, mediaID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("evicting remote media %s/%s: %w", origin, mediaID, err)
	}
	return orphans, nil
}
