-- Client IP retention (residency.zones[].client_ip_retention of our zone):
-- the periodic purge clears devices' last_seen_ip once last seen longer ago
-- than the setting; this index finds the devices still holding one.
CREATE INDEX devices_ip_last_seen ON devices (last_seen_ts) WHERE last_seen_ip <> '';
