-- Our users' device-list announcements to other servers (keyserver): a row
-- per device (device_id '' : the user's signing keys, an
-- m.signing_key_update) whose change is stored but whose
-- m.device_list_update is not yet in the federation sender's queue. It is
-- written in the same transaction as the change, so a crash between storing
-- and queueing loses nothing: the pending rows are announced on startup.
-- stream_id is 0 until the update is numbered (a reserved stream_id of
-- device_list_outbound, -1 for signing keys); a numbered row is re-sent with
-- the same stream_id after a crash (receivers ignore a repeated one), so the
-- chain of prev_ids has no false gap.
CREATE TABLE device_list_outbox (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, stream_id)
);
