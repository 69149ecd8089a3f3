-- Presence of users on other servers, as their servers last told us (m.presence EDUs).
CREATE TABLE remote_presence (
    user_id         TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    status_msg      TEXT,
    last_active_ts  INTEGER,
    stream          INTEGER NOT NULL
) STRICT;
CREATE INDEX remote_presence_stream ON remote_presence(stream);
