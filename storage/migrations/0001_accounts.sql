-- Accounts: users, devices, access and refresh tokens, UIA sessions,
-- account data, filters, registration tokens.
CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    localpart      TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL DEFAULT '',
    is_admin       BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated    BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts     BIGINT NOT NULL,
    displayname    TEXT,
    avatar_url     TEXT,
    -- Extended profile fields other than displayname/avatar_url (m.tz, custom
    -- namespaced keys): a JSON object.
    profile_fields TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    created_ts   BIGINT NOT NULL,
    last_seen_ts BIGINT NOT NULL DEFAULT 0,
    last_seen_ip TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes, never in the clear.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL DEFAULT 0 -- 0: never
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

-- Single-use tokens for the m.login.token flow (POST /v1/login/get_token).
CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

CREATE TABLE uia_sessions (
    session_id         TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL DEFAULT '',   -- '' while registering
    request            TEXT NOT NULL,              -- method + path the session was opened for
    completed          TEXT NOT NULL DEFAULT '[]', -- JSON array of completed stage types
    registration_token TEXT NOT NULL DEFAULT '',   -- database token reserved (pending) by this session
    created_ts         BIGINT NOT NULL
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);

-- room_id is '' for global account data.
CREATE TABLE account_data (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    content    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_pos);

CREATE TABLE filters (
    user_id   TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter    TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed INTEGER,          -- NULL: unlimited
    pending      INTEGER NOT NULL DEFAULT 0,
    completed    INTEGER NOT NULL DEFAULT 0,
    expiry_ts    BIGINT            -- NULL: never
);
