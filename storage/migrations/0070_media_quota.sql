-- One row per uploader, upserted at the start of a transaction that checks
-- and then changes that uploader's media (pending-upload cap, byte quota):
-- on PostgreSQL the upsert's row lock serializes those transactions per
-- user; SQLite serializes all writers anyway.
CREATE TABLE media_uploader_locks (
    uploader TEXT NOT NULL PRIMARY KEY
);
