-- A used refresh token stays valid until the tokens it was exchanged for are
-- used (client-server API, "Refreshing access tokens"): next_hash names the
-- refresh token it was exchanged for, and an access token records the refresh
-- token issued with it, so that using either new token revokes the old one.
ALTER TABLE refresh_tokens ADD COLUMN next_hash TEXT;
ALTER TABLE access_tokens ADD COLUMN refresh_hash TEXT;
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_hash) WHERE next_hash IS NOT NULL;
