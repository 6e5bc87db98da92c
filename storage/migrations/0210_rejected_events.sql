-- Rejected events (ingest): received PDUs the auth rules refused. They are
-- never stored as events (so never served: not to clients, not over
-- federation); their IDs are remembered so that a repeat is refused without
-- fetching or checking it again, an event whose auth_events cite one is
-- refused at once, and an event built on one (a prev_event) is placed after
-- its prev_events (the state after a rejected event is the state before it).
-- Bounded: the newest N per room are kept, trimmed on each insert.

CREATE TABLE rejected_events (
    event_id    TEXT PRIMARY KEY,
    room_id     TEXT NOT NULL,
    prev_events TEXT NOT NULL, -- JSON array of event IDs
    reason      TEXT NOT NULL,
    rejected_ts BIGINT NOT NULL -- ms
);
CREATE INDEX rejected_events_room ON rejected_events (room_id, rejected_ts);
