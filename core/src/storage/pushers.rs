//! Pushers (`/pushers`) and the notification history (`/notifications`).

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// How many notifications are kept per user; older ones are dropped.
pub const MAX_NOTIFICATIONS_PER_USER: i64 = 1000;

/// A stored pusher.
#[derive(Debug, Clone)]
pub struct PusherRow {
    /// The app.
    pub app_id: String,
    /// The app's key for the device at its push gateway.
    pub pushkey: String,
    /// The device (access token) that set it.
    pub device_id: String,
    /// `http` or `email`.
    pub kind: String,
    /// Shown to the user.
    pub app_display_name: String,
    /// Shown to the user.
    pub device_display_name: String,
    /// Chooses a rule set, if the client uses several.
    pub profile_tag: Option<String>,
    /// Preferred language of notifications.
    pub lang: String,
    /// The pusher's `data` object, as JSON.
    pub data: String,
}

/// A user's pushers.
pub fn list(conn: &Connection, user_id: &str) -> Result<Vec<PusherRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT app_id, pushkey, device_id, kind, app_display_name, device_display_name,
                profile_tag, lang, data
         FROM pushers WHERE user_id = ?1 ORDER BY created_ts, app_id, pushkey",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(PusherRow {
            app_id: r.get(0)?,
            pushkey: r.get(1)?,
            device_id: r.get(2)?,
            kind: r.get(3)?,
            app_display_name: r.get(4)?,
            device_display_name: r.get(5)?,
            profile_tag: r.get(6)?,
            lang: r.get(7)?,
            data: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Creates or replaces the pusher `(app_id, pushkey)` of a user. Unless `append`, other
/// users' pushers with the same app and push key are removed (the device changed hands).
pub fn set(conn: &Connection, user_id: &str, p: &PusherRow, append: bool, now: i64) -> Result<()> {
    if !append {
        conn.prepare_cached(
            "DELETE FROM pushers WHERE app_id = ?1 AND pushkey = ?2 AND user_id != ?3",
        )?
        .execute(params![p.app_id, p.pushkey, user_id])?;
    }
    let created: Option<i64> = conn
        .prepare_cached(
            "SELECT created_ts FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
        )?
        .query_row(params![user_id, p.app_id, p.pushkey], |r| r.get(0))
        .optional()?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO pushers (user_id, app_id, pushkey, device_id, kind,
            app_display_name, device_display_name, profile_tag, lang, data, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        user_id,
        p.app_id,
        p.pushkey,
        p.device_id,
        p.kind,
        p.app_display_name,
        p.device_display_name,
        p.profile_tag,
        p.lang,
        p.data,
        created.unwrap_or(now),
    ])?;
    Ok(())
}

/// Deletes a user's pusher `(app_id, pushkey)`; whether there was one.
pub fn delete(conn: &Connection, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3")?
        .execute(params![user_id, app_id, pushkey])?;
    Ok(n > 0)
}

/// Deletes every pusher of a user.
pub fn delete_all(conn: &Connection, user_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM pushers WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(())
}

/// Records a notification of `user_id` for the event at `stream` (stamped with the current
/// time), and now and then drops
/// the user's oldest ones beyond [`MAX_NOTIFICATIONS_PER_USER`].
pub fn insert_notification(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    stream: i64,
    thread_id: &str,
    highlight: bool,
    actions: &str,
) -> Result<()> {
    let ts = super::now_ms();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO notifications
            (user_id, room_id, stream, thread_id, highlight, actions, ts, read)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
    )?
    .execute(params![
        user_id, room_id, stream, thread_id, highlight, actions, ts
    ])?;
    // Pruning costs an index walk, so it runs on a small share of the inserts only.
    if stream % 64 == 0 {
        conn.prepare_cached(
            "DELETE FROM notifications WHERE user_id = ?1 AND stream <= (
                SELECT stream FROM notifications WHERE user_id = ?1
                ORDER BY stream DESC LIMIT 1 OFFSET ?2)",
        )?
        .execute(params![user_id, MAX_NOTIFICATIONS_PER_USER])?;
    }
    Ok(())
}

/// Marks a user's notifications in a room read up to stream position `upto`, in one thread
/// (`Some("")` = main timeline) or all of them (`None`).
pub fn mark_read(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    thread: Option<&str>,
    upto: i64,
) -> Result<()> {
    match thread {
        None => conn
            .prepare_cached(
                "UPDATE notifications SET read = 1
                 WHERE user_id = ?1 AND room_id = ?2 AND stream <= ?3 AND read = 0",
            )?
            .execute(params![user_id, room_id, upto])?,
        Some(thread) => conn
            .prepare_cached(
                "UPDATE notifications SET read = 1
                 WHERE user_id = ?1 AND room_id = ?2 AND stream <= ?3 AND thread_id = ?4
                   AND read = 0",
            )?
            .execute(params![user_id, room_id, upto, thread])?,
    };
    Ok(())
}

/// Forgets a user's notifications of a room (they left it).
pub fn clear_room_notifications(conn: &Connection, user_id: &str, room_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM notifications WHERE user_id = ?1 AND room_id = ?2")?
        .execute(params![user_id, room_id])?;
    Ok(())
}

/// Forgets every notification of a user.
pub fn clear_notifications(conn: &Connection, user_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM notifications WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(())
}

/// A stored notification.
#[derive(Debug, Clone)]
pub struct NotificationRow {
    /// The room.
    pub room_id: String,
    /// The event's stream position (also the pagination token).
    pub stream: i64,
    /// The event.
    pub event_id: String,
    /// The push rule actions, as JSON.
    pub actions: String,
    /// When it was recorded (ms).
    pub ts: i64,
    /// Whether a receipt covers it.
    pub read: bool,
}

/// A user's notifications, newest first, strictly before stream position `before` (if given).
pub fn notifications(
    conn: &Connection,
    user_id: &str,
    before: Option<i64>,
    only_highlight: bool,
    limit: usize,
) -> Result<Vec<NotificationRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT n.room_id, n.stream, e.event_id, n.actions, n.ts, n.read
         FROM notifications n JOIN events e ON e.stream = n.stream
         WHERE n.user_id = ?1 AND n.stream < ?2 AND (?3 = 0 OR n.highlight = 1)
         ORDER BY n.stream DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![
            user_id,
            before.unwrap_or(i64::MAX),
            only_highlight,
            limit as i64
        ],
        |r| {
            Ok(NotificationRow {
                room_id: r.get(0)?,
                stream: r.get(1)?,
                event_id: r.get(2)?,
                actions: r.get(3)?,
                ts: r.get(4)?,
                read: r.get(5)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
