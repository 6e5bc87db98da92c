package storage

import (
	"strconv"
	"strings"
)

// Helpers the area files share for reading lists and for queries over a
// variable number of values.

// collectStrings reads the single string column of rows and closes them. It
// takes Query's two results, so that a list query reads in one line:
//
//	users, err := collectStrings(db.Query(ctx, `SELECT user_id FROM ...`, ...))
func collectStrings(rows Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// placeholders returns "$start, $start+1, ..." for n parameters.
func placeholders(start, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(start + i))
	}
	return b.String()
}

// anyArgs converts values to query arguments.
func anyArgs[T any](values []T) []any {
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out
}

// inChunkSize bounds the values of one "IN (...)" list: under both backends'
// parameter limits, and few distinct query texts (see stmtCache).
const inChunkSize = 500

// inChunks calls fn on consecutive slices of at most inChunkSize items.
func inChunks(items []string, fn func([]string) error) error {
	for len(items) > 0 {
		n := min(inChunkSize, len(items))
		if err := fn(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}
