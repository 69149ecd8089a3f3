-- Presence of local users. `last_active_ts` is when the user was last seen active;
-- `stream` is the position of the last change clients should hear about.
CREATE TABLE presence (
    user_id         TEXT PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    state           TEXT NOT NULL,
    status_msg      TEXT,
    last_active_ts  INTEGER NOT NULL,
    stream          INTEGER NOT NULL
) STRICT;
CREATE INDEX presence_stream ON presence(stream);

-- Reports of events and rooms, for whoever runs the node to read.
CREATE TABLE reports (
    id              INTEGER PRIMARY KEY,
    room_id         TEXT NOT NULL,
    event_id        TEXT,
    reporter        TEXT NOT NULL,
    reason          TEXT,
    score           INTEGER,
    received_ts     INTEGER NOT NULL
) STRICT;
