-- Gaps in timelines: an event accepted while some of its prev events are not
-- timeline events here (the state at a gap fetched with /state_ids, a join
-- over federation) has missing history before it. /sync and sliding sync
-- start a timeline holding one at it, limited, so that the client pages back
-- (and /messages backfills) rather than taking the timeline as continuous.
-- A flag on the row, read with the row: nothing extra per /sync.
ALTER TABLE events ADD COLUMN after_gap BOOLEAN NOT NULL DEFAULT FALSE;
