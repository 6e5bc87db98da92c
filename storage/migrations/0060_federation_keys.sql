-- Remote servers' signing keys, as fetched directly or through a notary.
-- One row per (server, key); key_json is the whole signed /_matrix/key/v2/server
-- response that carried the key, kept so that this server can act as a
-- notary (re-serving it with its own signature added) and so that old events
-- stay verifiable after the origin goes away.
CREATE TABLE server_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    verify_key     TEXT NOT NULL,             -- unpadded base64 ed25519 public key
    valid_until_ts BIGINT NOT NULL DEFAULT 0, -- ms; already capped at fetch time + 7 days
    expired_ts     BIGINT NOT NULL DEFAULT 0, -- ms; non-zero for old_verify_keys
    key_json       TEXT NOT NULL,
    fetched_ts     BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
