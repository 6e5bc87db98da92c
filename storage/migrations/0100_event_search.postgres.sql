-- Full-text search (POST /search): one row per searchable event, keyed by the
-- event's stream position (storage/search.go), its text as an 'english' tsvector.
CREATE TABLE event_search (
    stream_pos BIGINT PRIMARY KEY,
    vector     TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);

-- Index the events stored so far as WriteRoomEvents indexes new ones: message
-- bodies, room names and topics (content.topic) that are strings, neither
-- soft-failed nor redacted, outside encrypted rooms. (A \u0000 escape cannot
-- become PostgreSQL text: such events are left out.)
INSERT INTO event_search (stream_pos, vector)
SELECT stream_pos, to_tsvector('english', body) FROM (
    SELECT e.stream_pos, e.json::jsonb -> 'content' ->> f.field AS body,
        jsonb_typeof(e.json::jsonb -> 'content' -> f.field) AS kind
    FROM events e
    JOIN (VALUES ('m.room.message', 'body'), ('m.room.name', 'name'), ('m.room.topic', 'topic')) AS f(type, field)
        ON f.type = e.type
    WHERE NOT e.soft_failed AND e.redacted_by IS NULL AND strpos(e.json, '\u0000') = 0
      AND ((e.type = 'm.room.message' AND e.state_key IS NULL) OR (e.type <> 'm.room.message' AND e.state_key = ''))
      AND NOT EXISTS (SELECT 1 FROM current_state c WHERE c.room_id = e.room_id AND c.type = 'm.room.encryption')
) t WHERE kind = 'string' AND trim(body) <> '';
