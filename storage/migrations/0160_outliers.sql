-- Outliers: events stored for their content and their auth/state role only
-- (the auth chain and state of a room joined over federation, the state
-- fetched with /state_ids), never in a timeline or stream read. Their
-- stream_pos comes from a separate range far below zero (storage.OutlierPos),
-- so range reads with a lower bound exclude them by construction; every
-- timeline read also says NOT outlier, so reads without a lower bound and
-- events with negative positions that are not outliers (backfill) are told
-- apart by the flag, not by the sign.
ALTER TABLE events ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT FALSE;
