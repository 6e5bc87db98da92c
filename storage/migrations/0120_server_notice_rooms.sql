-- Each local user's server notices room (created by the system user on the
-- first notice and reused for every later one, even after the user left it).
CREATE TABLE server_notice_rooms (
    user_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL
);
