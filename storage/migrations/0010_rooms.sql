-- Rooms: the event graph, deduplicated state snapshots, current state,
-- memberships, aliases, the room directory, transaction IDs and reports.

CREATE TABLE rooms (
    room_id          TEXT PRIMARY KEY,
    room_version     TEXT NOT NULL,
    creator          TEXT NOT NULL,
    created_ts       BIGINT NOT NULL,
    is_public        BOOLEAN NOT NULL DEFAULT FALSE,
    -- state snapshot of the current state, forward extremities (JSON array) and greatest depth
    state_snapshot   BIGINT NOT NULL DEFAULT 0,
    extremities      TEXT NOT NULL DEFAULT '[]',
    max_depth        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX rooms_public ON rooms (is_public);

-- Every persisted event. json is the PDU as sent over federation (redacted in
-- place once a redaction applies). state_before / state_after name snapshots.
CREATE TABLE events (
    event_id         TEXT PRIMARY KEY,
    room_id          TEXT NOT NULL,
    stream_pos       BIGINT NOT NULL UNIQUE,
    depth            BIGINT NOT NULL,
    type             TEXT NOT NULL,
    state_key        TEXT,
    sender           TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    json             TEXT NOT NULL,
    state_before     BIGINT NOT NULL,
    state_after      BIGINT NOT NULL,
    soft_failed      BOOLEAN NOT NULL DEFAULT FALSE,
    redacted_by      TEXT,
    relates_to       TEXT,
    rel_type         TEXT,
    membership       TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_pos);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_pos);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
CREATE INDEX events_relations ON events (relates_to, rel_type);
-- membership history of a user across rooms (sync's join/invite/leave sections)
CREATE INDEX events_member_changes ON events (state_key, stream_pos) WHERE type = 'm.room.member';

-- State snapshots are chains: each snapshot holds only the entries that differ
-- from its parent; a keyframe (parent 0) holds the whole state and bounds the
-- chain length.
CREATE TABLE state_snapshots (
    snapshot_id BIGINT PRIMARY KEY,
    room_id     TEXT NOT NULL,
    parent_id   BIGINT NOT NULL,
    chain_len   INTEGER NOT NULL
);
CREATE TABLE state_snapshot_entries (
    snapshot_id BIGINT NOT NULL,
    type        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, type, state_key)
);

CREATE TABLE current_state (
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

CREATE TABLE memberships (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    forgotten  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, membership);
CREATE INDEX memberships_room ON memberships (room_id, membership);

-- Idempotent sends: one event per (user, device, txn_id).
CREATE TABLE room_txns (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX room_txns_event ON room_txns (event_id);

CREATE TABLE room_aliases (
    alias      TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    creator    TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE event_reports (
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    reporter   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    score      BIGINT,
    created_ts BIGINT NOT NULL
);
