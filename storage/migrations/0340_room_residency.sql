-- Data-localization policy (residency): the zone each room is resident in,
-- decided once. Rooms created here are pinned at creation (the zone is also
-- in m.room.create's content); rooms hosted elsewhere are classified by the
-- policy's rules when first met (invite, join) and kept, so that a later
-- rule change does not move a room's data without a decision.
CREATE TABLE room_residency (
    room_id    TEXT NOT NULL PRIMARY KEY,
    zone       TEXT NOT NULL,
    rule       TEXT NOT NULL,   -- what decided: residency.rooms.rules[N], default_zone, a creator's choice
    source     TEXT NOT NULL,   -- created | classified
    decided_ts BIGINT NOT NULL
);
