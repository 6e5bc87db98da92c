-- The remote media cache's size, kept as a running total so that checking
-- the budget after each fetch reads one row instead of summing every cached
-- file. It counts what RemoteMediaBytes always meant: the remote originals'
-- sizes and those of their thumbnails that are not the original itself.
-- Every insert and eviction of the cache updates it in the same transaction.
CREATE TABLE media_remote_cache_size (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    bytes BIGINT NOT NULL
);
INSERT INTO media_remote_cache_size (id, bytes) VALUES (1,
    (SELECT COALESCE(SUM(size), 0) FROM media WHERE remote) +
    (SELECT COALESCE(SUM(t.size), 0) FROM media_thumbnails t
        JOIN media m ON m.origin = t.origin AND m.media_id = t.media_id
        WHERE m.remote AND t.sha256 <> m.sha256));
