-- Inbound federation transactions (ingest): the per-PDU results of each
-- transaction a server sent us, so a retried transaction (same origin and
-- transaction ID) is answered from here and never processed twice. The
-- window is bounded: rows older than a day, or beyond the newest N per
-- origin, are trimmed when a new transaction is recorded.

CREATE TABLE federation_txns (
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    results     TEXT NOT NULL, -- JSON: event ID -> error ("" when accepted)
    received_ts BIGINT NOT NULL, -- ms
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_txns_age ON federation_txns (origin, received_ts);
