-- Accounts, devices and access tokens.
CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    localpart      TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    displayname    TEXT,
    avatar_url     TEXT,
    created_ts     INTEGER NOT NULL,
    deactivated    INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE devices (
    user_id        TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    device_id      TEXT NOT NULL,
    display_name   TEXT,
    last_seen_ts   INTEGER,
    PRIMARY KEY (user_id, device_id)
) STRICT;

-- Tokens are stored as SHA-256 digests: a copy of the database does not hand out sessions.
CREATE TABLE access_tokens (
    token_hash     BLOB PRIMARY KEY,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    created_ts     INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);

-- Rooms and their event graph.
CREATE TABLE rooms (
    room_id        TEXT PRIMARY KEY,
    room_version   TEXT NOT NULL,
    creator        TEXT,
    published      INTEGER NOT NULL DEFAULT 0,
    state_group    INTEGER
) STRICT;

-- Every PDU, in the room version's canonical form (no event_id for v3+ rooms).
-- `stream` orders events as this node learnt them; sync and pagination tokens are built on it.
CREATE TABLE events (
    nid             INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    room_id         TEXT NOT NULL,
    stream          INTEGER UNIQUE,
    type            TEXT NOT NULL,
    state_key       TEXT,
    sender          TEXT NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    depth           INTEGER NOT NULL,
    json            TEXT NOT NULL,
    state_before    INTEGER,
    state_after     INTEGER,
    prev_state      TEXT,
    outlier         INTEGER NOT NULL DEFAULT 0,
    rejected        INTEGER NOT NULL DEFAULT 0,
    redacted_by     TEXT,
    relates_to      TEXT,
    rel_type        TEXT,
    txn_device      TEXT,
    txn_id          TEXT
) STRICT;
CREATE INDEX events_room_stream ON events(room_id, stream);
CREATE INDEX events_relates ON events(relates_to, rel_type);
-- A transaction id is scoped to its device and endpoint (room and event type).
CREATE UNIQUE INDEX events_txn ON events(sender, txn_device, txn_id, room_id, type) WHERE txn_id IS NOT NULL;

CREATE TABLE event_edges (
    event_id        TEXT NOT NULL,
    prev_event_id   TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) STRICT;
CREATE INDEX event_edges_prev ON event_edges(prev_event_id);

CREATE TABLE forward_extremities (
    room_id         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) STRICT;

-- State snapshots, delta-encoded: a group is its `prev_group` plus its own entries.
-- Chains are cut (a full copy is written) once they grow long.
CREATE TABLE state_groups (
    id              INTEGER PRIMARY KEY,
    room_id         TEXT NOT NULL,
    prev_group      INTEGER REFERENCES state_groups(id),
    chain_len       INTEGER NOT NULL
) STRICT;

CREATE TABLE state_group_entries (
    group_id        INTEGER NOT NULL REFERENCES state_groups(id),
    type            TEXT NOT NULL,
    state_key       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    PRIMARY KEY (group_id, type, state_key)
) STRICT, WITHOUT ROWID;

-- The resolved current state of each room, for fast lookups.
CREATE TABLE current_state (
    room_id         TEXT NOT NULL,
    type            TEXT NOT NULL,
    state_key       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
) STRICT, WITHOUT ROWID;

-- Current membership of every user in every room, with the stream position of its last change.
CREATE TABLE memberships (
    room_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    membership      TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    stream          INTEGER NOT NULL,
    forgotten       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX memberships_user ON memberships(user_id, membership);

CREATE TABLE room_aliases (
    alias           TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    creator         TEXT NOT NULL
) STRICT;
CREATE INDEX room_aliases_room ON room_aliases(room_id);

-- Per-user data.
CREATE TABLE account_data (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL DEFAULT '',
    type            TEXT NOT NULL,
    content         TEXT NOT NULL,
    stream          INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
) STRICT, WITHOUT ROWID;

CREATE TABLE receipts (
    room_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    receipt_type    TEXT NOT NULL,
    thread_id       TEXT NOT NULL DEFAULT '',
    event_id        TEXT NOT NULL,
    ts              INTEGER NOT NULL,
    stream          INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX receipts_stream ON receipts(room_id, stream);

CREATE TABLE filters (
    user_id         TEXT NOT NULL,
    filter_id       INTEGER NOT NULL,
    json            TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
) STRICT;

-- Stream positions are shared by every table above that has a `stream` column.
CREATE TABLE stream_position (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    pos             INTEGER NOT NULL
) STRICT;
INSERT INTO stream_position (id, pos) VALUES (1, 0);
