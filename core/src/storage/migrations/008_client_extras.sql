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

-- Full-text index of the searchable text of events (`content.body` of messages,
-- `content.name` and `content.topic` of room names and topics). The rowid is the event's
-- `nid`; redacted events leave the index.
CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    key UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO event_search (rowid, value, key)
    SELECT nid, json_extract(json, '$.content.body'), 'content.body' FROM events
    WHERE type = 'm.room.message' AND stream IS NOT NULL AND redacted_by IS NULL
      AND json_type(json, '$.content.body') = 'text';
INSERT INTO event_search (rowid, value, key)
    SELECT nid, json_extract(json, '$.content.name'), 'content.name' FROM events
    WHERE type = 'm.room.name' AND stream IS NOT NULL AND redacted_by IS NULL
      AND json_type(json, '$.content.name') = 'text';
INSERT INTO event_search (rowid, value, key)
    SELECT nid, json_extract(json, '$.content.topic'), 'content.topic' FROM events
    WHERE type = 'm.room.topic' AND stream IS NOT NULL AND redacted_by IS NULL
      AND json_type(json, '$.content.topic') = 'text';
