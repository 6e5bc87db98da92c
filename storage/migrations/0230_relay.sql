-- Events a resident server must pass on: a remote user's join, leave or knock
-- taken through send_join / send_leave / send_knock reached only this server;
-- the federation sender sends it to the room's other servers (its follower
-- reads the flag with the row).
ALTER TABLE events ADD COLUMN relay BOOLEAN NOT NULL DEFAULT FALSE;
