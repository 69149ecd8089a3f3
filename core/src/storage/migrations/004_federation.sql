-- Events waiting to be sent to other servers, per destination, in order.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    destination     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    created_ts      INTEGER NOT NULL
) STRICT;
CREATE INDEX outbox_destination ON outbox(destination, id);

-- The stripped room state that came with an invite from another server.
CREATE TABLE invite_states (
    room_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    json            TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
) STRICT;

-- Ephemeral data (typing, receipts) waiting to be sent, per destination.
CREATE TABLE edu_outbox (
    id              INTEGER PRIMARY KEY,
    destination     TEXT NOT NULL,
    json            TEXT NOT NULL
) STRICT;
CREATE INDEX edu_outbox_destination ON edu_outbox(destination, id);

-- The address book: peers this node has known, so they are redialled after a restart.
CREATE TABLE peers (
    peer_id         TEXT PRIMARY KEY,
    server_name     TEXT,
    addresses       TEXT NOT NULL,
    discovered      TEXT NOT NULL,
    last_seen_ts    INTEGER NOT NULL
) STRICT;
