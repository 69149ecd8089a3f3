-- Notifying events not yet read, per local user, room and thread ('' = main timeline).
-- Filled when an event joins a room's timeline and the user's push rules say `notify`;
-- rows up to a receipt are deleted when the user sends it, so what is left is the count.
CREATE TABLE push_actions (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    stream          INTEGER NOT NULL,
    thread_id       TEXT NOT NULL DEFAULT '',
    highlight       INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, stream)
) STRICT, WITHOUT ROWID;
