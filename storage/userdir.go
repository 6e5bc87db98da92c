package storage

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strings"

	"modernc.org/sqlite"
)

// The user directory (POST /user_directory/search) searches the users the
// searcher can see through rooms: those sharing a joined room with them, and
// those joined to rooms with a public join rule or world-readable history.
// The candidate set is reached through indexes (memberships by user and by
// room, current_state by type); matching is a case-insensitive substring
// test on the user ID and display name of that set only.

func init() {
	// SQLite's lower() folds ASCII only; the directory folds Unicode.
	sqlite.MustRegisterDeterministicScalarFunction("myelin_lower", 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case string:
			return strings.ToLower(v), nil
		case []byte:
			return strings.ToLower(string(v)), nil
		default:
			return v, nil
		}
	})
}

// DirectoryUser is one user directory result.
type DirectoryUser struct {
	UserID      string
	DisplayName string // "" if none
	AvatarURL   string // "" if none
}

// SearchUserDirectory returns up to limit users visible to searcher whose
// user ID or display name contains term (case-insensitively), best matches
// first, and whether more matched. The searcher is not among them (as in
// Synapse; Complement's directory tests count the results).
func (db *DB) SearchUserDirectory(ctx context.Context, searcher, term string, limit int) ([]DirectoryUser, bool, error) {
	lower, content := "LOWER", func(path string) string {
		return "(%s.json::jsonb #>> '{content," + path + "}')"
	}
	if db.dialect == SQLite {
		lower, content = "myelin_lower", func(path string) string {
			return "json_extract(%s.json, '$.content." + path + "')"
		}
	}
	field := func(alias, path string) string { return fmt.Sprintf(content(path), alias) }
	// Local users' profiles are authoritative; remote users are known by their member events.
	name := "COALESCE(u.displayname, " + field("me", "displayname") + ")"
	avatar := "COALESCE(u.avatar_url, " + field("me", "avatar_url") + ")"
	query := `WITH candidates AS (
			SELECT other.user_id, other.event_id FROM memberships mine
			JOIN memberships other ON other.room_id = mine.room_id AND other.membership = 'join'
			WHERE mine.user_id = $1 AND mine.membership = 'join'
			UNION
			SELECT m.user_id, m.event_id FROM current_state cs
			JOIN events se ON se.event_id = cs.event_id
			JOIN memberships m ON m.room_id = cs.room_id AND m.membership = 'join'
			WHERE cs.state_key = '' AND (
				(cs.type = 'm.room.join_rules' AND ` + field("se", "join_rule") + ` = 'public') OR
				(cs.type = 'm.room.history_visibility' AND ` + field("se", "history_visibility") + ` = 'world_readable'))
		), matches AS (
			SELECT c.user_id, MAX(` + name + `) AS display_name, MAX(` + avatar + `) AS avatar_url
			FROM candidates c
			JOIN events me ON me.event_id = c.event_id
			LEFT JOIN users u ON u.user_id = c.user_id
			WHERE (u.user_id IS NULL OR NOT u.deactivated) AND c.user_id <> $1
			  AND (` + lower + `(c.user_id) LIKE $2 ESCAPE '\' OR ` + lower + `(` + name + `) LIKE $2 ESCAPE '\')
			GROUP BY c.user_id
		)
		SELECT user_id, COALESCE(display_name, ''), COALESCE(avatar_url, '') FROM matches
		ORDER BY
			CASE WHEN ` + lower + `(display_name) LIKE $3 ESCAPE '\' OR ` + lower + `(user_id) LIKE $4 ESCAPE '\' THEN 0 ELSE 1 END,
			CASE WHEN display_name IS NULL THEN 1 ELSE 0 END,
			user_id
		LIMIT $5`
	t := escapeLike(strings.ToLower(term))
	rows, err := db.Query(ctx, query, searcher, "%"+t+"%", t+"%", "@"+t+"%", limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("searching the user directory: %w", err)
	}
	defer rows.Close()
	var out []DirectoryUser
	for rows.Next() {
		var u DirectoryUser
		if err := rows.Scan(&u.UserID, &u.DisplayName, &u.AvatarURL); err != nil {
			return nil, false, fmt.Errorf("searching the user directory: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("searching the user directory: %w", err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// escapeLike escapes LIKE's wildcards with '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
