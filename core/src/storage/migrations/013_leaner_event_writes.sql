-- Fewer B-tree pages written per stored event.
-- Most events relate to nothing: only those that do are in the relations index.
DROP INDEX events_relates;
CREATE INDEX events_relates ON events(relates_to, rel_type) WHERE relates_to IS NOT NULL;

-- Edges and extremities are looked up only by their keys: keyed tables without a rowid
-- write one B-tree instead of a table and its key index.
CREATE TABLE event_edges_keyed (
    event_id        TEXT NOT NULL,
    prev_event_id   TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) STRICT, WITHOUT ROWID;
INSERT INTO event_edges_keyed (event_id, prev_event_id)
    SELECT event_id, prev_event_id FROM event_edges;
DROP TABLE event_edges;
ALTER TABLE event_edges_keyed RENAME TO event_edges;
CREATE INDEX event_edges_prev ON event_edges(prev_event_id);

CREATE TABLE forward_extremities_keyed (
    room_id         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) STRICT, WITHOUT ROWID;
INSERT INTO forward_extremities_keyed (room_id, event_id)
    SELECT room_id, event_id FROM forward_extremities;
DROP TABLE forward_extremities;
ALTER TABLE forward_extremities_keyed RENAME TO forward_extremities;
