-- OpenID tokens (POST /user/{userId}/openid/request_token): a third party
-- (an integration manager, a widget host) exchanges one for the user's ID at
-- /_matrix/federation/v1/openid/userinfo. Stored as SHA-256, like access tokens.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_user ON openid_tokens (user_id, created_ts);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
