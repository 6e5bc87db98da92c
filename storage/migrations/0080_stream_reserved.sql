-- The stream's high-water mark: positions up to `reserved` may have been handed
-- out (and seen by clients in sync tokens) before a restart, even when no row
-- holding them survives (to-device rows are deleted once acknowledged, a failed
-- commit leaves a gap). At start-up the stream resumes after it, so no position
-- a client has seen is ever reused.
CREATE TABLE stream_reserved (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    reserved BIGINT  NOT NULL
);
