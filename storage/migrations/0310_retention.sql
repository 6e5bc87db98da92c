-- Message retention (retention package, storage/retention.go).
-- The purge's candidates: a room's unredacted non-state events by age.
CREATE INDEX events_retention ON events (room_id, origin_server_ts) WHERE state_key IS NULL AND redacted_by IS NULL;

-- The mxc:// URIs that purged events named, recorded in the purge's own
-- transaction and removed once the media is deleted (or found still named
-- elsewhere): a purge interrupted between the two finishes on the next run.
CREATE TABLE retention_media (
    uri TEXT PRIMARY KEY
);
