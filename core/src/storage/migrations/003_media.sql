-- The media repository. The bytes live in files beside the database, named by their SHA-256
-- (data_dir/media/blobs/ab/abcd…), so identical uploads share one file; these tables hold
-- what the client API needs to serve them.

-- One row per `mxc://origin/media_id`. `origin` is this node's server name for local media
-- (remote media, once federation fetches it, will be cached under its own origin).
-- `sha256` is NULL while an asynchronous upload (POST /create) waits for its content.
CREATE TABLE media (
    origin             TEXT NOT NULL,
    media_id           TEXT NOT NULL,
    uploader           TEXT NOT NULL,
    created_ts         INTEGER NOT NULL,
    sha256             TEXT,
    size               INTEGER,
    content_type       TEXT,
    filename           TEXT,
    uploaded_ts        INTEGER,
    -- When a pending upload that never received content stops being valid.
    unused_expires_ts  INTEGER,
    PRIMARY KEY (origin, media_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX media_pending ON media(uploader, unused_expires_ts) WHERE sha256 IS NULL;
CREATE INDEX media_sha256 ON media(sha256) WHERE sha256 IS NOT NULL;

-- Generated thumbnails, keyed by the content they were made from (so deduplicated uploads
-- share them) and the request that produced them. The thumbnail bytes are a blob too.
CREATE TABLE media_thumbnails (
    source_sha256      TEXT NOT NULL,
    width              INTEGER NOT NULL,
    height             INTEGER NOT NULL,
    method             TEXT NOT NULL,
    content_type       TEXT NOT NULL,
    sha256             TEXT NOT NULL,
    size               INTEGER NOT NULL,
    created_ts         INTEGER NOT NULL,
    PRIMARY KEY (source_sha256, width, height, method)
) STRICT, WITHOUT ROWID;
