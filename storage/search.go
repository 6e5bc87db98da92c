package storage

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Full-text search over events (POST /search). The index holds one row per
// searchable event, keyed by its stream position: the body of m.room.message,
// the name of m.room.name, the topic of m.room.topic. SQLite keeps it in an
// FTS5 table (porter stemming over unicode61), PostgreSQL in a tsvector
// column ('english' configuration) with a GIN index. WriteRoomEvents indexes
// events as it stores them and drops the rows of events it redacts, in the
// same transaction; soft-failed events and events of encrypted rooms are
// never indexed. Migration 0100 indexed the events stored before it.

// SearchKeyTypes maps each searchable key to the event type it is read from.
var SearchKeyTypes = map[string]string{
	"content.body":  "m.room.message",
	"content.name":  "m.room.name",
	"content.topic": "m.room.topic",
}

// searchText is the text an event contributes to the index ("" for none).
func searchText(e *Event) string {
	content := gjson.GetBytes(e.JSON, "content")
	var text string
	switch {
	case e.Type == "m.room.message" && e.StateKey == nil:
		text = stringField(content, "body")
	case e.Type == "m.room.name" && e.StateKey != nil && *e.StateKey == "":
		text = stringField(content, "name")
	case e.Type == "m.room.topic" && e.StateKey != nil && *e.StateKey == "":
		text = stringField(content, "topic")
		// v1.15 topics: the text/plain representations count too.
		for _, r := range content.Get(`m\.topic.m\.text`).Array() {
			mime := r.Get("mimetype")
			if b := stringField(r, "body"); b != "" && b != text && (!mime.Exists() || mime.Str == "text/plain") {
				text = strings.TrimSpace(text + "\n" + b)
			}
		}
	}
	// PostgreSQL text holds neither NUL nor invalid UTF-8.
	return strings.ReplaceAll(strings.ToValidUTF8(text, "\uFFFD"), "\x00", " ")
}

func stringField(obj gjson.Result, key string) string {
	if v := obj.Get(gjson.Escape(key)); v.Type == gjson.String {
		return v.Str
	}
	return ""
}

// indexForSearch adds an event to the search index if it has searchable text.
func (db *DB) indexForSearch(ctx context.Context, tx Querier, e *Event) error {
	text := searchText(e)
	if strings.TrimSpace(text) == "" {
		return nil
	}
	q := `INSERT INTO event_search (rowid, body) VALUES ($1, $2)`
	if db.dialect == Postgres {
		q = `INSERT INTO event_search (stream_pos, vector) VALUES ($1, to_tsvector('english', $2))`
	}
	if _, err := tx.Exec(ctx, q, e.StreamPos, text); err != nil {
		return fmt.Errorf("indexing %s for search: %w", e.EventID, err)
	}
	return nil
}

// unindexForSearch removes a redacted event from the search index.
func (db *DB) unindexForSearch(ctx context.Context, tx Querier, eventID string) error {
	q := `DELETE FROM event_search WHERE rowid = (SELECT stream_pos FROM events WHERE event_id = $1)`
	if db.dialect == Postgres {
		q = `DELETE FROM event_search WHERE stream_pos = (SELECT stream_pos FROM events WHERE event_id = $1)`
	}
	if _, err := tx.Exec(ctx, q, eventID); err != nil {
		return fmt.Errorf("removing %s from the search index: %w", eventID, err)
	}
	return nil
}

// SearchRange is a span of a room's stream positions (inclusive) whose
// events the searcher may see.
type SearchRange struct {
	RoomID string `json:"r"`
	From   int64  `json:"lo"`
	To     int64  `json:"hi"`
}

// SearchQuery is one search: Terms (words, each matched as a prefix, all
// required) over events of Types inside Ranges passing the filters.
type SearchQuery struct {
	Terms      []string
	Types      []string // event types to search (from SearchKeyTypes)
	Ranges     []SearchRange
	Senders    []string // nil: any
	NotSenders []string
	// Only events of a type matching one of these (a trailing '*' is a prefix), when set.
	TypeFilter    []string
	NotTypeFilter []string
	ContainsURL   *bool
	ByRank        bool // order by rank, best first; else by stream position, latest first
	// Keyset cursor: only results after the last one of the previous page.
	After     bool
	AfterRank float64
	AfterPos  int64
	Limit     int
}

// SearchHit is one search result.
type SearchHit struct {
	Event *Event
	Rank  float64
}

// searchSQL builds the FROM/WHERE of a search and its arguments. The
// ranges are a VALUES list joined on room_id (the planner indexes it), the
// full-text match drives the query.
// It returns the WITH clause and a body whose %s is the select list.
func (db *DB) searchSQL(q *SearchQuery) (with, body, rank string, args []any) {
	args = []any{db.matchQuery(q.Terms)}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	rows := make([]string, len(q.Ranges))
	for i, r := range q.Ranges {
		rows[i] = fmt.Sprintf("(CAST(%s AS TEXT), CAST(%s AS BIGINT), CAST(%s AS BIGINT))", arg(r.RoomID), arg(r.From), arg(r.To))
	}
	with = "WITH v(r, lo, hi) AS (VALUES " + strings.Join(rows, ", ") + ") "
	var where []string
	var from string
	if db.dialect == Postgres {
		// The matches first (the GIN index), then the rooms: left to itself
		// the planner reads every event of the rooms searched instead.
		// (The rank is computed there too, when asked for: the vectors stay out of the CTE.)
		score := "0.0"
		if q.ByRank {
			score = "ts_rank_cd(i.vector, to_tsquery('english', $1))"
		}
		with += `, s AS MATERIALIZED (SELECT i.stream_pos, ie.room_id, ` + score + ` AS score FROM event_search i
			JOIN events ie ON ie.stream_pos = i.stream_pos WHERE i.vector @@ to_tsquery('english', $1)) `
		from = `s JOIN v ON s.room_id = v.r AND s.stream_pos BETWEEN v.lo AND v.hi
			JOIN events e ON e.stream_pos = s.stream_pos`
		rank = "s.score"
	} else {
		from = `event_search s JOIN events e ON e.stream_pos = s.rowid
			JOIN v ON e.room_id = v.r AND e.stream_pos BETWEEN v.lo AND v.hi`
		where = append(where, "event_search MATCH $1")
		rank = "-bm25(event_search)"
	}
	where = append(where, "NOT e.soft_failed AND NOT e.outlier", "e.redacted_by IS NULL")
	in := func(col string, vals []string) string {
		if len(vals) == 0 {
			return "FALSE"
		}
		ps := make([]string, len(vals))
		for i, v := range vals {
			ps[i] = arg(v)
		}
		return col + " IN (" + strings.Join(ps, ", ") + ")"
	}
	typeMatch := func(patterns []string) string {
		var conds []string
		for _, p := range patterns {
			if pre, ok := strings.CutSuffix(p, "*"); ok {
				// substr, not LIKE: case-sensitive on both backends.
				conds = append(conds, fmt.Sprintf("substr(e.type, 1, %d) = %s", utf8.RuneCountInString(pre), arg(pre)))
			} else {
				conds = append(conds, "e.type = "+arg(p))
			}
		}
		if len(conds) == 0 {
			return "FALSE"
		}
		return "(" + strings.Join(conds, " OR ") + ")"
	}
	where = append(where, in("e.type", q.Types))
	if q.Senders != nil {
		where = append(where, in("e.sender", q.Senders))
	}
	if len(q.NotSenders) > 0 {
		where = append(where, "NOT "+in("e.sender", q.NotSenders))
	}
	if q.TypeFilter != nil {
		where = append(where, typeMatch(q.TypeFilter))
	}
	if len(q.NotTypeFilter) > 0 {
		where = append(where, "NOT "+typeMatch(q.NotTypeFilter))
	}
	if q.ContainsURL != nil {
		hasURL := "json_type(e.json, '$.content.url') IS NOT NULL"
		if db.dialect == Postgres {
			hasURL = "(e.json::json -> 'content' -> 'url') IS NOT NULL"
		}
		if !*q.ContainsURL {
			hasURL = "NOT " + hasURL
		}
		where = append(where, hasURL)
	}
	return with, "%s FROM " + from + " WHERE " + strings.Join(where, " AND "), rank, args
}

// matchQuery renders the terms in the backend's query syntax. Terms are
// letters and digits only (the caller splits the user's text), so nothing in
// them is syntax; each matches as a prefix, all are required.
func (db *DB) matchQuery(terms []string) string {
	parts := make([]string, len(terms))
	for i, t := range terms {
		if db.dialect == Postgres {
			parts[i] = t + ":*"
		} else {
			parts[i] = `"` + t + `"*`
		}
	}
	if db.dialect == Postgres {
		return strings.Join(parts, " & ")
	}
	return strings.Join(parts, " ")
}

// SearchEvents returns a page of matching events, best (or latest) first.
func (db *DB) SearchEvents(ctx context.Context, q *SearchQuery) ([]SearchHit, error) {
	if len(q.Terms) == 0 || len(q.Ranges) == 0 || len(q.Types) == 0 {
		return nil, nil
	}
	with, body, rank, args := db.searchSQL(q)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var query string
	if q.ByRank {
		cursor := "TRUE"
		if q.After {
			r := arg(q.AfterRank)
			cursor = "(score < " + r + " OR (score = " + r + " AND pos < " + arg(q.AfterPos) + "))"
		}
		// Rank and sort positions only; the page's rows are read after.
		matches := fmt.Sprintf(body, "SELECT e.stream_pos AS pos, "+rank+" AS score")
		query = with + `SELECT ` + prefixed("ev") + `, hits.score FROM (
				SELECT pos, score FROM (` + matches + `) m WHERE ` + cursor + `
				ORDER BY score DESC, pos DESC LIMIT ` + arg(q.Limit) + `
			) hits JOIN events ev ON ev.stream_pos = hits.pos
			ORDER BY hits.score DESC, hits.pos DESC`
	} else {
		// Latest first straight from the index's order: no ranking, no sort of every match.
		pos := "s.rowid"
		if db.dialect == Postgres {
			pos = "s.stream_pos"
		}
		cursor := ""
		if q.After {
			cursor = " AND " + pos + " < " + arg(q.AfterPos)
		}
		query = with + fmt.Sprintf(body, "SELECT "+prefixed("e")+", 0.0") + cursor + ` ORDER BY ` + pos + ` DESC LIMIT ` + arg(q.Limit)
	}
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("searching events: %w", err)
	}
	defer rows.Close()
	var out []SearchHit
	for rows.Next() {
		var h SearchHit
		e, err := scanEvent(scanWithRank{rows, &h.Rank})
		if err != nil {
			return nil, fmt.Errorf("searching events: %w", err)
		}
		h.Event = e
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("searching events: %w", err)
	}
	return out, nil
}

// scanWithRank scans an event row followed by its rank.
type scanWithRank struct {
	rows Rows
	rank *float64
}

func (s scanWithRank) Scan(dest ...any) error { return s.rows.Scan(append(dest, s.rank)...) }

// CountSearch is the number of events a search matches (all pages).
func (db *DB) CountSearch(ctx context.Context, q *SearchQuery) (int, error) {
	if len(q.Terms) == 0 || len(q.Ranges) == 0 || len(q.Types) == 0 {
		return 0, nil
	}
	with, body, _, args := db.searchSQL(q)
	var n int
	if err := db.QueryRow(ctx, with+fmt.Sprintf(body, "SELECT COUNT(*)"), args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting search results: %w", err)
	}
	return n, nil
}

// SearchRooms returns the rooms of the query's ranges holding matches, and
// how many each.
func (db *DB) SearchRooms(ctx context.Context, q *SearchQuery) (map[string]int, error) {
	if len(q.Terms) == 0 || len(q.Ranges) == 0 || len(q.Types) == 0 {
		return nil, nil
	}
	with, body, _, args := db.searchSQL(q)
	rows, err := db.Query(ctx, with+fmt.Sprintf(body, "SELECT e.room_id, COUNT(*)")+" GROUP BY e.room_id", args...)
	if err != nil {
		return nil, fmt.Errorf("searching rooms: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var room string
		var n int
		if err := rows.Scan(&room, &n); err != nil {
			return nil, fmt.Errorf("searching rooms: %w", err)
		}
		out[room] = n
	}
	return out, rows.Err()
}

// MemberEventBefore is the latest m.room.member event of user in the room
// before stream position pos (their profile then); ErrNotFound if none.
func (db *DB) MemberEventBefore(ctx context.Context, roomID, userID string, pos int64) (*Event, error) {
	return scanEvent(db.QueryRow(ctx, `SELECT `+eventColumns+` FROM events
		WHERE state_key = $1 AND stream_pos < $2 AND type = 'm.room.member' AND room_id = $3 AND NOT soft_failed
		ORDER BY stream_pos DESC LIMIT 1`, userID, pos, roomID))
}
