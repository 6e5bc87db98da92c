-- Out-of-band memberships of known rooms (an invite received while this
-- server was out of the room): the membership reads ask, per member event,
-- whether a held out-of-band event of the same user and room supersedes it.
CREATE INDEX events_out_of_band ON events (room_id, state_key) WHERE out_of_band_version IS NOT NULL;
