-- Key changes only one user sees: when a user signs another user's master key
-- with their user-signing key, the target's keys changed for the signer alone
-- (that signature is shown to nobody else). The signer's /sync and
-- /keys/changes report the target; the target's room peers learn nothing.
CREATE TABLE device_list_changes_for (
    viewer_user_id TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    stream_pos     BIGINT NOT NULL,
    PRIMARY KEY (viewer_user_id, user_id)
);
CREATE INDEX device_list_changes_for_stream ON device_list_changes_for (viewer_user_id, stream_pos);
