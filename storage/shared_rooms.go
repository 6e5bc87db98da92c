package storage

import (
	"context"
	"fmt"
)

// Who shares a room with whom: device-list tracking for end-to-end encryption.
// A user's devices matter to everyone joined to or invited into a room with
// them (invitees must be able to decrypt from the moment they join).

// UsersSharingRoomsWith lists the users (local and remote) joined to or
// invited into any room userID is joined to or invited into, userID excluded.
func (db *DB) UsersSharingRoomsWith(ctx context.Context, userID string) ([]string, error) {
	users, err := collectStrings(db.Query(ctx, `SELECT DISTINCT other.user_id FROM memberships mine
		JOIN memberships other ON other.room_id = mine.room_id
		WHERE mine.user_id = $1 AND mine.membership IN ('join', 'invite')
		  AND other.membership IN ('join', 'invite') AND other.user_id <> $1`, userID))
	if err != nil {
		return nil, fmt.Errorf("listing users sharing rooms with %s: %w", userID, err)
	}
	return users, nil
}

// ServersSharingRoomsWith lists the servers (ours included) with a member
// joined to a room userID is joined to: where that user's presence and
// device-list updates go over federation.
func (db *DB) ServersSharingRoomsWith(ctx context.Context, userID string) ([]string, error) {
	servers, err := collectStrings(db.Query(ctx, `SELECT DISTINCT rs.server_name FROM memberships m
		JOIN room_servers rs ON rs.room_id = m.room_id
		WHERE m.user_id = $1 AND m.membership = 'join' AND rs.joined > 0 ORDER BY rs.server_name`, userID))
	if err != nil {
		return nil, fmt.Errorf("listing servers sharing rooms with %s: %w", userID, err)
	}
	return servers, nil
}

// SharedUsersChangedBetween reports, for the stream range (from, to], the
// users who started sharing a room with userID (someone joined a room of
// theirs, or they joined a room) and the users who may have stopped (someone
// left a room of theirs, or they left a room). The caller drops from `left`
// anyone still sharing another room.
func (db *DB) SharedUsersChangedBetween(ctx context.Context, userID string, from, to int64) (joined, left []string, err error) {
	own, err := db.MembershipChanges(ctx, userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range own {
		members, err := db.roomMemberIDs(ctx, c.RoomID)
		if err != nil {
			return nil, nil, err
		}
		switch c.Membership {
		case "join", "invite":
			joined = append(joined, members...)
		case "leave", "ban":
			left = append(left, members...)
		}
	}
	// Others' membership changes in the rooms userID is in now.
	rows, err := db.Query(ctx, `SELECT e.state_key, e.membership FROM events e
		JOIN memberships mine ON mine.room_id = e.room_id AND mine.user_id = $1 AND mine.membership IN ('join', 'invite')
		WHERE e.type = 'm.room.member' AND e.stream_pos > $2 AND e.stream_pos <= $3
		  AND NOT e.soft_failed AND NOT e.outlier AND e.state_key <> $1
		ORDER BY e.stream_pos`, userID, from, to)
	if err != nil {
		return nil, nil, fmt.Errorf("reading membership changes shared with %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var user string
		var membership *string
		if err := rows.Scan(&user, &membership); err != nil {
			return nil, nil, err
		}
		switch deref(membership) {
		case "join", "invite":
			joined = append(joined, user)
		case "leave", "ban":
			left = append(left, user)
		}
	}
	return joined, left, rows.Err()
}

// roomMemberIDs lists the joined and invited users of a room.
func (db *DB) roomMemberIDs(ctx context.Context, roomID string) ([]string, error) {
	users, err := collectStrings(db.Query(ctx, `SELECT user_id FROM memberships WHERE room_id = $1 AND membership IN ('join', 'invite')`, roomID))
	if err != nil {
		return nil, fmt.Errorf("listing members of %s: %w", roomID, err)
	}
	return users, nil
}
