-- The federation sender's EDU queue (federationsender.Queue): per
-- destination, the EDUs this server sends (to-device messages, device-list
-- updates, typing, receipts, presence) until the destination acknowledges the
-- transaction carrying them. Rows go out in id order; in_txn marks those of
-- the transaction in flight (federation_destinations.txn_id), so that a retry,
-- after a restart too, carries exactly the same EDUs.
CREATE TABLE federation_edus (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination TEXT NOT NULL,
    edu_type    TEXT NOT NULL,
    content     TEXT NOT NULL,
    ephemeral   BOOLEAN NOT NULL, -- may be dropped while the destination is failing
    in_txn      BOOLEAN NOT NULL DEFAULT FALSE,
    queued_ts   BIGINT NOT NULL   -- ms
);
CREATE INDEX federation_edus_destination ON federation_edus (destination, id);

-- How many transactions carrying EDUs were started for the destination: the
-- second half of their IDs ("m<acked PDU position>.<n>"), unique per destination.
ALTER TABLE federation_destinations ADD COLUMN edu_txns BIGINT NOT NULL DEFAULT 0;
