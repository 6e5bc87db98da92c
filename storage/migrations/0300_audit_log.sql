-- The audit trail (package audit): an append-only, hash-chained log of the
-- data that crosses the server's boundary (flows), the policy's refusals,
-- policy changes and admin actions. seq is dense from 1; hash is the
-- SHA-256 (hex) of the record's canonical bytes, which include prev_hash,
-- the previous record's hash (64 zeros for the first). The primary key on
-- seq keeps the chain from forking (storage.InsertAudit).
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    ts        BIGINT NOT NULL, -- ms
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    body      TEXT NOT NULL,   -- canonical JSON
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts);
