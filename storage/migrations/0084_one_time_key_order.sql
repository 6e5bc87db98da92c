-- /keys/claim hands out a device's oldest one-time key first: seq numbers a
-- device's uploads (keys of one upload share it; key_id breaks the tie).
ALTER TABLE one_time_keys ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX one_time_keys_order ON one_time_keys (user_id, device_id, algorithm, seq, key_id);
