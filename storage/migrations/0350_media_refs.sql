-- The mxc reference record (data localization, retention): which rooms'
-- events name which mxc:// URIs, in the fields clients render (url,
-- info.thumbnail_url, file.url, info.thumbnail_file.url, avatar_url, and
-- <img src> in formatted_body). Filled by a follower of the stream
-- (MediaRefsFollower), never by the room writer; an event's URIs are
-- deduplicated and bounded, so an event adds a few rows at most. A URI is
-- referenced by an event while that event is not redacted (the join on
-- events.redacted_by), so a redaction or retention's purge needs no update here.
CREATE TABLE media_refs (
    uri        TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (uri, event_id)
);
