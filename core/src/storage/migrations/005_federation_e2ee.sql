-- End-to-end encryption across servers.

-- Device lists of users on other servers, as their server last sent them: `json` holds
-- {"devices": {device_id: {"keys": …, "device_display_name": …}}, "master_key": …,
-- "self_signing_key": …}. `stream_id` is the origin's id of that version of the list;
-- `cached_pos` the local stream position when it was fetched (a join of the user after it
-- means updates may have been missed while no room was shared).
CREATE TABLE remote_device_lists (
    user_id         TEXT PRIMARY KEY,
    stream_id       INTEGER NOT NULL,
    cached_pos      INTEGER NOT NULL,
    json            TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- The id of the last device-list update announced to other servers, per local user
-- (the `prev_id` of the next one).
CREATE TABLE device_list_outbound (
    user_id         TEXT PRIMARY KEY,
    stream_id       INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Ids of to-device EDUs received, so that a retried transaction delivers them once.
CREATE TABLE received_to_device (
    origin          TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    ts              INTEGER NOT NULL,
    PRIMARY KEY (origin, message_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX received_to_device_ts ON received_to_device(ts);
