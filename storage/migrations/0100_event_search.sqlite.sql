-- Full-text search (POST /search): one row per searchable event, its rowid the
-- event's stream position (storage/search.go). Porter stemming over unicode61.
CREATE VIRTUAL TABLE event_search USING fts5(body, tokenize = 'porter unicode61 remove_diacritics 2');

-- Index the events stored so far as WriteRoomEvents indexes new ones: message
-- bodies, room names and topics (content.topic) that are strings, neither
-- soft-failed nor redacted, outside encrypted rooms.
INSERT INTO event_search (rowid, body)
SELECT stream_pos, body FROM (
    SELECT e.stream_pos, json_extract(e.json, f.path) AS body, json_type(e.json, f.path) AS kind
    FROM events e
    JOIN (SELECT 'm.room.message' AS type, '$.content.body' AS path
          UNION ALL SELECT 'm.room.name', '$.content.name'
          UNION ALL SELECT 'm.room.topic', '$.content.topic') f ON f.type = e.type
    WHERE NOT e.soft_failed AND e.redacted_by IS NULL
      AND ((e.type = 'm.room.message' AND e.state_key IS NULL) OR (e.type <> 'm.room.message' AND e.state_key = ''))
      AND NOT EXISTS (SELECT 1 FROM current_state c WHERE c.room_id = e.room_id AND c.type = 'm.room.encryption')
) t WHERE kind = 'text' AND trim(body) <> '';
