-- Remote media cache: other servers' media fetched for our users are media
-- rows with remote true; last_access_ts orders them for least-recently-used
-- eviction under media.remote_cache_bytes. Local uploads are never remote
-- and never evicted.
ALTER TABLE media ADD COLUMN remote BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE media ADD COLUMN last_access_ts BIGINT NOT NULL DEFAULT 0;
CREATE INDEX media_remote_lru ON media (remote, last_access_ts);
