-- Push delivery (push/delivery.go): the notifications queued for push
-- gateways, one row per pusher. A row is pending while done_ts = 0; done rows
-- (sent, rejected or given up) are kept a day so that a follower replaying
-- events after a crash (dedup) queues nothing twice, then pruned.
CREATE TABLE push_queue (
    id BIGSERIAL PRIMARY KEY,
    user_id   TEXT NOT NULL,
    app_id    TEXT NOT NULL,
    pushkey   TEXT NOT NULL,
    url       TEXT NOT NULL,              -- the gateway (pusher data.url)
    dedup     TEXT NOT NULL UNIQUE,       -- event and pusher; unique per badge update
    body      TEXT NOT NULL,              -- the request body, built when queued
    queued_ts BIGINT NOT NULL,            -- ms
    attempts  BIGINT NOT NULL DEFAULT 0,
    done_ts   BIGINT NOT NULL DEFAULT 0,  -- ms; 0 while pending
    result    TEXT NOT NULL DEFAULT ''    -- sent | rejected | refused | expired | gone
);
CREATE INDEX push_queue_pending ON push_queue (url, done_ts, id);
CREATE INDEX push_queue_done ON push_queue (done_ts);
