-- Push gateways of each user's devices (`/pushers`). A pusher belongs to the device that
-- set it: logging the device out or deleting it removes the pusher with it.
CREATE TABLE pushers (
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    data                TEXT NOT NULL,
    created_ts          INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX pushers_device ON pushers(user_id, device_id);
CREATE INDEX pushers_pushkey ON pushers(app_id, pushkey);

-- Notifications a user received (`/notifications`): one row per event whose push rules said
-- `notify`, kept after it is read (unlike `push_actions`, which only holds unread ones).
CREATE TABLE notifications (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    stream          INTEGER NOT NULL,
    thread_id       TEXT NOT NULL DEFAULT '',
    highlight       INTEGER NOT NULL,
    actions         TEXT NOT NULL,
    ts              INTEGER NOT NULL,
    read            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, room_id, stream)
) STRICT, WITHOUT ROWID;
CREATE INDEX notifications_user ON notifications(user_id, stream);
