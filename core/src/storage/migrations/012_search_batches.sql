-- Searchable events are added to the full-text index in batches (one FTS5 segment for many
-- messages instead of one per message): `stream` is the last stream position whose events
-- are in the index. Everything stored so far was indexed as it arrived.
CREATE TABLE search_progress (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    stream          INTEGER NOT NULL
) STRICT;
INSERT INTO search_progress (id, stream) SELECT 1, coalesce(max(stream), 0) FROM events;
