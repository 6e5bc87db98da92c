-- Erasure (deactivation with erase: true). erased_users lists the users who
-- asked for it: their events are served in redacted form to everyone who was
-- not joined when an event was sent (clientevent), and to other servers.
-- media.erased_ts marks a local upload erased: its blob and thumbnails are
-- gone, its metadata cleared and downloads answer 404.
CREATE TABLE erased_users (
    user_id   TEXT NOT NULL PRIMARY KEY,
    erased_ts BIGINT NOT NULL
);
ALTER TABLE media ADD COLUMN erased_ts BIGINT NOT NULL DEFAULT 0;
-- myelin export-user pages through a user's own events by sender.
CREATE INDEX events_sender ON events (sender, stream_pos);
