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
