-- Data-localization policy (residency): the last consortium trust list
-- accepted from each issuer (so that a restart applies it at once, even when
-- its URL is down, and a replayed older list is refused), and the
-- fingerprint of the policy last recorded in the audit trail (so that a
-- change made while the server was stopped is recorded once at startup).
CREATE TABLE residency_trust_list (
    issuer      TEXT NOT NULL PRIMARY KEY,
    version     BIGINT NOT NULL,
    document    TEXT NOT NULL,   -- the signed document as fetched
    accepted_ts BIGINT NOT NULL
);
CREATE TABLE residency_policy_state (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL,   -- residency.Rules.Fingerprint of the policy last recorded
    summary     TEXT NOT NULL,   -- JSON: its enabled flag, zones and trust list version
    recorded_ts BIGINT NOT NULL
);
