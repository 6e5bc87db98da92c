-- Device lists of remote users (keyserver): a cache of the device keys,
-- device display names and cross-signing keys (master, self_signing) of
-- users of other servers who share a room with a local user, kept current by
-- their server's m.device_list_update / m.signing_key_update EDUs.

-- stream_id is the last update applied (-1: unknown, the cache was filled by
-- /user/keys/query: the next update resyncs). A stale list is resynced
-- (GET /user/devices) before it is used. filled_pos is the stream position
-- when it was fetched whole: a list fetched before the user last started
-- sharing a room with us may have missed updates and is not used.
CREATE TABLE remote_device_lists (
    user_id    TEXT PRIMARY KEY,
    stream_id  BIGINT NOT NULL,
    stale      BOOLEAN NOT NULL DEFAULT FALSE,
    filled_pos BIGINT NOT NULL DEFAULT 0,
    updated_ts BIGINT NOT NULL
);

-- key_json is the signed device_keys object as the user's server gave it
-- ('' for a device with no keys).
CREATE TABLE remote_device_keys (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    key_json     TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);

-- key_type: master or self_signing (a user_signing key is never shared).
CREATE TABLE remote_cross_signing_keys (
    user_id  TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- The stream_ids of updates applied per remote user (the latest few), which
-- later updates' prev_id may name.
CREATE TABLE remote_device_list_seen (
    user_id   TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_id)
);

-- Outbound: the stream_id of the last m.device_list_update sent for each
-- local user (the next names it as prev_id).
CREATE TABLE device_list_outbound (
    user_id   TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL
);
