-- A key response is stored once, not once per key it carries, and only the
-- latest few per server are kept (storage.KeptServerKeyResponses): they are
-- what this server re-serves as a notary. server_keys keeps the keys alone,
-- a bounded number per server (storage.KeptServerKeys).
CREATE TABLE server_key_responses (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_name    TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,  -- ms, as capped at fetch time
    fetched_ts     BIGINT NOT NULL,
    key_json       TEXT NOT NULL     -- the signed response, as received
);
CREATE INDEX server_key_responses_server ON server_key_responses (server_name, valid_until_ts);

-- Each distinct stored response once, the latest two per server.
INSERT INTO server_key_responses (server_name, valid_until_ts, fetched_ts, key_json)
SELECT server_name, valid_until_ts, fetched_ts, key_json FROM (
    SELECT server_name, MAX(valid_until_ts) AS valid_until_ts, MAX(fetched_ts) AS fetched_ts, key_json,
        ROW_NUMBER() OVER (PARTITION BY server_name ORDER BY MAX(valid_until_ts) DESC, MAX(fetched_ts) DESC) AS n
    FROM server_keys GROUP BY server_name, key_json
) latest WHERE n <= 2;

-- At most 256 keys per server, the most recently fetched.
DELETE FROM server_keys WHERE (server_name, key_id) IN (
    SELECT server_name, key_id FROM (
        SELECT server_name, key_id,
            ROW_NUMBER() OVER (PARTITION BY server_name ORDER BY fetched_ts DESC, key_id) AS n
        FROM server_keys
    ) ranked WHERE n > 256
);

ALTER TABLE server_keys DROP COLUMN key_json;
