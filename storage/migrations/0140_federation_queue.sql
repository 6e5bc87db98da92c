-- The federation sender's durable queues (federationsender): one queue per
-- destination server of the PDUs this server originated, and each
-- destination's delivery state (backoff, the transaction in flight).

CREATE TABLE federation_queue (
    destination TEXT NOT NULL,
    stream_pos  BIGINT NOT NULL, -- the event's position: the queue's order
    room_id     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    queued_ts   BIGINT NOT NULL, -- ms, for the oldest-item age
    PRIMARY KEY (destination, stream_pos)
);
-- The catch-up trim counts and drops a destination's events per room.
CREATE INDEX federation_queue_room ON federation_queue (destination, room_id, stream_pos);

CREATE TABLE federation_destinations (
    destination   TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL DEFAULT 0, -- consecutive failed attempts
    backoff_until BIGINT NOT NULL DEFAULT 0, -- ms: no attempt before
    last_success  BIGINT NOT NULL DEFAULT 0, -- ms
    -- Everything at or below acked_upto was acknowledged: a replayed enqueue
    -- of it is ignored, so nothing acknowledged is sent again.
    acked_upto    BIGINT NOT NULL DEFAULT 0,
    -- The transaction in flight (txn_id '' when none): the queued events up
    -- to txn_upto, retried under the same ID until acknowledged.
    txn_id        TEXT NOT NULL DEFAULT '',
    txn_upto      BIGINT NOT NULL DEFAULT 0
);
