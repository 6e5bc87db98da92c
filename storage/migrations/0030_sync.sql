-- Sync side: receipts, presence, push rules, pushers.

-- One row per (room, user, receipt type, thread); thread_id '' is the
-- unthreaded receipt. A newer receipt replaces the row and takes a new stream_pos.
CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL DEFAULT '',
    event_id     TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_pos);
CREATE INDEX receipts_stream ON receipts (stream_pos);

CREATE TABLE presence (
    user_id          TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    status_msg       TEXT,
    last_active_ts   BIGINT NOT NULL,
    currently_active BOOLEAN NOT NULL DEFAULT FALSE,
    stream_pos       BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_pos);

-- The user's whole push ruleset (server-default rules merged with theirs), as
-- JSON; absent until the user first changes a rule.
CREATE TABLE push_rules (
    user_id    TEXT PRIMARY KEY,
    ruleset    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL
);

CREATE TABLE pushers (
    user_id    TEXT NOT NULL,
    app_id     TEXT NOT NULL,
    pushkey    TEXT NOT NULL,
    device_id  TEXT NOT NULL DEFAULT '',
    pusher     TEXT NOT NULL, -- the pusher object as the client set it (JSON)
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_key ON pushers (app_id, pushkey);
