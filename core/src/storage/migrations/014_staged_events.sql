-- Events received before the events they depend on (auth events or prev events). They wait
-- here, bounded per room and per sending server, while what they lack is fetched, and are
-- tried again whenever something new is stored in their room.
CREATE TABLE staged_events (
    event_id        TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    -- The server that handed us the event (not necessarily its sender's).
    origin          TEXT NOT NULL,
    depth           INTEGER NOT NULL,
    json            TEXT NOT NULL,
    received_ts     INTEGER NOT NULL
) STRICT;
CREATE INDEX staged_events_room ON staged_events(room_id, depth);
CREATE INDEX staged_events_origin ON staged_events(origin);

-- Earlier versions rejected an event whose auth events they did not have, and every event
-- that cited it after that. Such rejections cannot be told from real ones, so every rejected
-- event is examined again: it becomes an outlier with no known state (as if only its PDU had
-- been fetched) and waits in the holding area until its auth and prev events are there.
INSERT OR IGNORE INTO staged_events (event_id, room_id, origin, depth, json, received_ts)
    SELECT event_id, room_id, substr(sender, instr(sender, ':') + 1), depth, json,
           CAST(strftime('%s', 'now') AS INTEGER) * 1000
    FROM events WHERE rejected = 1;
UPDATE events SET rejected = 0, outlier = 1, state_before = NULL, state_after = NULL
    WHERE rejected = 1;
