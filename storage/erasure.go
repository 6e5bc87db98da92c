package storage

import (
	"context"
	"fmt"
	"sync"
)

// erasedSet is the erased users (table erased_users), held in memory: every
// rendering of events asks about its senders, and the set only grows, through
// this process's DeactivateUser (the store belongs to one server process).
type erasedSet struct {
	mu    sync.RWMutex
	users map[string]bool
}

// loadErased reads erased_users at start-up.
func (db *DB) loadErased(ctx context.Context) error {
	ids, err := collectStrings(db.Query(ctx, `SELECT user_id FROM erased_users`))
	if err != nil {
		return fmt.Errorf("reading erased users: %w", err)
	}
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	db.erased.mu.Lock()
	db.erased.users = m
	db.erased.mu.Unlock()
	return nil
}

func (db *DB) addErased(userID string) {
	db.erased.mu.Lock()
	if db.erased.users == nil {
		db.erased.users = map[string]bool{}
	}
	db.erased.users[userID] = true
	db.erased.mu.Unlock()
}

// ErasedUsers reports which of userIDs deactivated their account with erase
// (nil when none did). It reads memory only.
func (db *DB) ErasedUsers(_ context.Context, userIDs []string) (map[string]bool, error) {
	db.erased.mu.RLock()
	defer db.erased.mu.RUnlock()
	if len(db.erased.users) == 0 {
		return nil, nil
	}
	var out map[string]bool
	for _, u := range userIDs {
		if db.erased.users[u] {
			if out == nil {
				out = map[string]bool{}
			}
			out[u] = true
		}
	}
	return out, nil
}

// EraseUploads marks the local uploads of userID erased (every erased user's
// when userID is ""): metadata cleared, thumbnails dropped, downloads 404
// (GetMedia answers ErrNotFound). It returns the blobs (SHA-256s) no row
// names any more, which the caller deletes, and the number of uploads erased.
func (db *DB) EraseUploads(ctx context.Context, userID string, now int64) (orphans []string, n int, err error) {
	if userID == "" {
		db.erased.mu.RLock()
		none := len(db.erased.users) == 0
		db.erased.mu.RUnlock()
		if none {
			return nil, 0, nil
		}
	}
	err = db.Tx(ctx, func(tx Querier) error {
		orphans, n = nil, 0
		who := `uploader = $1`
		args := []any{userID}
		if userID == "" {
			who, args = `uploader IN (SELECT user_id FROM erased_users)`, nil
		}
		sel := `SELECT origin, media_id, sha256 FROM media WHERE ` + who + ` AND NOT remote AND erased_ts = 0`
		rows, err := tx.Query(ctx, sel, args...)
		if err != nil {
			return err
		}
		type item struct{ origin, id, sha string }
		var items []item
		for rows.Next() {
			var it item
			if err := rows.Scan(&it.origin, &it.id, &it.sha); err != nil {
				rows.Close()
				return err
			}
			items = append(items, it)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		sums := map[string]bool{}
		for _, it := range items {
			if it.sha != "" {
				sums[it.sha] = true
			}
			thumbs, err := collectStrings(tx.Query(ctx, `SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, it.origin, it.id))
			if err != nil {
				return err
			}
			for _, s := range thumbs {
				sums[s] = true
			}
			if _, err := tx.Exec(ctx, `DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, it.origin, it.id); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE media SET erased_ts = $3, sha256 = '', size = 0, filename = '', content_type = ''
				WHERE origin = $1 AND media_id = $2`, it.origin, it.id, now); err != nil {
				return err
			}
		}
		n = len(items)
		for s := range sums {
			var refs int
			if err := tx.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)`, s).Scan(&refs); err != nil {
				return err
			}
			if refs == 0 {
				orphans = append(orphans, s)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("erasing the uploads of %q: %w", userID, err)
	}
	return orphans, n, nil
}
