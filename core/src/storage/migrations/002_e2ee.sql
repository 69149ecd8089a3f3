-- End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys and
-- their signatures, the device-list change stream, to-device inboxes and key backup.
-- Everything that belongs to a device goes when the device row goes (logout, delete).

-- A device's identity keys as uploaded (without `unsigned`), self-signature included.
CREATE TABLE device_keys (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    json            TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Unclaimed one-time keys. `id` is the upload order: claims hand out the oldest first.
CREATE TABLE one_time_keys (
    id              INTEGER PRIMARY KEY,
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    json            TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE UNIQUE INDEX one_time_keys_device ON one_time_keys(user_id, device_id, algorithm, key_id);

-- At most one fallback key per device and algorithm; `used` once it has been claimed.
CREATE TABLE fallback_keys (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    json            TEXT NOT NULL,
    used            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Cross-signing keys: `usage` is master, self_signing or user_signing.
CREATE TABLE cross_signing_keys (
    user_id         TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    usage           TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    json            TEXT NOT NULL,
    PRIMARY KEY (user_id, usage)
) STRICT, WITHOUT ROWID;

-- Signatures uploaded through /keys/signatures/upload. `target_key` is a device id or a
-- cross-signing public key of `target_user`.
CREATE TABLE key_signatures (
    target_user     TEXT NOT NULL,
    target_key      TEXT NOT NULL,
    signer_user     TEXT NOT NULL,
    signer_key_id   TEXT NOT NULL,
    signature       TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key_id)
) STRICT, WITHOUT ROWID;

-- The last stream position at which each user's devices or keys changed.
CREATE TABLE device_list_changes (
    user_id         TEXT PRIMARY KEY,
    stream          INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX device_list_changes_stream ON device_list_changes(stream);

-- Membership changes since a sync token (who newly shares or no longer shares a room).
CREATE INDEX memberships_stream ON memberships(stream);

-- Per-device inboxes. A message is deleted once its device syncs with a token past it.
CREATE TABLE to_device (
    id              INTEGER PRIMARY KEY,
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    stream          INTEGER NOT NULL,
    sender          TEXT NOT NULL,
    type            TEXT NOT NULL,
    content         TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX to_device_inbox ON to_device(user_id, device_id, stream);

-- Transaction ids of /sendToDevice, per sending device, for idempotent retries.
CREATE TABLE to_device_txns (
    sender          TEXT NOT NULL,
    sender_device   TEXT NOT NULL,
    txn_id          TEXT NOT NULL,
    ts              INTEGER NOT NULL,
    PRIMARY KEY (sender, sender_device, txn_id),
    FOREIGN KEY (sender, sender_device) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Server-side key backup. Versions are never reused: a deleted version keeps its row.
CREATE TABLE backup_versions (
    user_id         TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    version         INTEGER NOT NULL,
    algorithm       TEXT NOT NULL,
    auth_data       TEXT NOT NULL,
    etag            INTEGER NOT NULL DEFAULT 0,
    deleted         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE backup_keys (
    user_id             TEXT NOT NULL,
    version             INTEGER NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count     INTEGER NOT NULL,
    is_verified         INTEGER NOT NULL,
    session_data        TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES backup_versions(user_id, version) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
