package storage

import (
	"context"
	"fmt"
)

// ForgetClientIPs clears the client IP address of every device last seen
// before the given time (ms), and returns how many it cleared.
func (db *DB) ForgetClientIPs(ctx context.Context, before int64) (int64, error) {
	n, err := db.Exec(ctx, `UPDATE devices SET last_seen_ip = '' WHERE last_seen_ip <> '' AND last_seen_ts < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("forgetting client IPs: %w", err)
	}
	return n, nil
}
