-- Simplified sliding sync (MSC4186): connection state, kept so that a client resumes from its
-- `pos` after the node restarts.

-- The parameters of a connection's last request, for clients that send sticky parameters
-- (MSC3575 style) only when they change.
CREATE TABLE sliding_sync_connections (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    conn_id         TEXT NOT NULL,
    params          TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- One row per `pos` handed out. `stream` is the global stream position the response covered;
-- `typing` the typing serial (meaningless after a restart, which typing detects).
CREATE TABLE sliding_sync_positions (
    pos_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    conn_id         TEXT NOT NULL,
    -- The position the request came with (NULL on a fresh connection).
    parent          INTEGER,
    stream          INTEGER NOT NULL,
    typing          INTEGER NOT NULL,
    created_ts      INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX sliding_sync_positions_conn ON sliding_sync_positions(user_id, device_id, conn_id);

-- Rooms a connection has sent: in the response that produced `pos_id`, the room was brought
-- up to `stream`. Rows of positions the client never acknowledged (a lost response, a request
-- it gave up on) are dropped when it comes back with another `pos`.
CREATE TABLE sliding_sync_rooms (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    conn_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    pos_id          INTEGER NOT NULL,
    stream          INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, room_id, pos_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Finding the rooms with new receipts across all rooms at once.
CREATE INDEX receipts_global_stream ON receipts(stream);
