-- Content repository: one row per media ID. The bytes live on disk under
-- <data_dir>/media, content-addressed by SHA-256; a row names its blob.
-- origin is our own server name for local media (remote media, cached once
-- federation fetches it, carries the remote server's name).
CREATE TABLE media (
    origin       TEXT NOT NULL,
    media_id     TEXT NOT NULL,
    uploader     TEXT NOT NULL,
    content_type TEXT NOT NULL DEFAULT '',
    size         BIGINT NOT NULL DEFAULT 0,
    filename     TEXT NOT NULL DEFAULT '',
    sha256       TEXT NOT NULL DEFAULT '',   -- '' while created (async upload) but not yet uploaded
    created_ts   BIGINT NOT NULL,
    uploaded_ts  BIGINT NOT NULL DEFAULT 0,  -- 0 while pending
    expires_ts   BIGINT NOT NULL DEFAULT 0,  -- pending IDs only: unused_expires_at
    PRIMARY KEY (origin, media_id)
);
-- pending uploads per user (the concurrent-pending cap) and blob reference counts
CREATE INDEX media_uploader ON media (uploader, uploaded_ts);
CREATE INDEX media_sha256 ON media (sha256);

-- Generated thumbnails, one per (media, size, method, animated); bytes in the same blob store.
CREATE TABLE media_thumbnails (
    origin       TEXT NOT NULL,
    media_id     TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    method       TEXT NOT NULL,
    animated     BOOLEAN NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method, animated)
);

-- User directory: the rooms whose join rule or history visibility make their
-- members searchable are found through their current state by type.
CREATE INDEX current_state_type ON current_state (type, state_key);
