-- What the client-server API's unsigned data needs, recorded when an event is
-- persisted so that reads never resolve it:
--   replaces_state: the state event this state event replaced (unsigned.replaces_state,
--                   and unsigned.prev_content from that event's content);
--   txn_device, txn_id: the device and client transaction ID that sent it
--                   (unsigned.transaction_id, shown to that device only).
ALTER TABLE events ADD COLUMN replaces_state TEXT;
ALTER TABLE events ADD COLUMN txn_device TEXT;
ALTER TABLE events ADD COLUMN txn_id TEXT;

-- Existing events: transaction IDs from room_txns (redactions are recorded
-- there as 'redact:' + the client's ID).
UPDATE events SET
    txn_device = (SELECT t.device_id FROM room_txns t WHERE t.event_id = events.event_id),
    txn_id = (SELECT CASE WHEN t.txn_id LIKE 'redact:%' THEN SUBSTR(t.txn_id, 8) ELSE t.txn_id END
              FROM room_txns t WHERE t.event_id = events.event_id)
WHERE event_id IN (SELECT event_id FROM room_txns);

-- Existing state events: the previous event of the same type and state key in
-- stream order (exact for linear histories, which is all the server had
-- before federation input).
UPDATE events SET replaces_state = (
    SELECT p.event_id FROM events p
    WHERE p.room_id = events.room_id AND p.type = events.type AND p.state_key = events.state_key
      AND p.stream_pos < events.stream_pos AND NOT p.soft_failed
    ORDER BY p.stream_pos DESC LIMIT 1)
WHERE state_key IS NOT NULL;
