-- Followers of the stream (internal/follower) and the joined servers of each
-- room, which followers that talk to other servers read instead of the state.

-- Each follower's cursor: the last stream position it has handled. Not a
-- stream table (it holds positions, it does not take them).
CREATE TABLE stream_cursors (
    name     TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);

-- Per room, the servers with joined members and how many: maintained by the
-- room writer in the transaction that updates memberships. The server name is
-- what follows the first ':' of a user ID (storage.ServerOfUser).
CREATE TABLE room_servers (
    room_id     TEXT NOT NULL,
    server_name TEXT NOT NULL,
    joined      BIGINT NOT NULL,
    PRIMARY KEY (room_id, server_name) -- also lists a room's servers
);

INSERT INTO room_servers (room_id, server_name, joined)
SELECT room_id, SUBSTR(user_id, INSTR(user_id, ':') + 1), COUNT(*)
FROM memberships WHERE membership = 'join'
GROUP BY room_id, SUBSTR(user_id, INSTR(user_id, ':') + 1);
