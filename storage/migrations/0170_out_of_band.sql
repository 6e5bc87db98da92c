-- Out-of-band memberships: a local user's invite, knock or leave of a room
-- hosted elsewhere that this server is not in. The event is stored with a
-- stream position (so /sync's membership read reports it) but the room gets
-- no rooms row, state or memberships: it stays unknown. A non-NULL
-- out_of_band_version marks such an event and records the room's version
-- (nothing else here knows it); the rows go when the room is created here.
ALTER TABLE events ADD COLUMN out_of_band_version TEXT;
