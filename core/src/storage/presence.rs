//! Presence of local users.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// A user's stored presence.
#[derive(Debug, Clone)]
pub struct PresenceRow {
    /// The user.
    pub user_id: String,
    /// `online`, `offline` or `unavailable`.
    pub state: String,
    /// Free-text status.
    pub status_msg: Option<String>,
    /// When the user was last active (ms since the epoch); `None` if never seen.
    pub last_active_ts: Option<i64>,
    /// Display name, for presence events.
    pub displayname: Option<String>,
    /// Avatar, for presence events.
    pub avatar_url: Option<String>,
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PresenceRow> {
    Ok(PresenceRow {
        user_id: r.get(0)?,
        state: r.get(1)?,
        status_msg: r.get(2)?,
        last_active_ts: r.get(3)?,
        displayname: r.get(4)?,
        avatar_url: r.get(5)?,
    })
}

/// A user's presence, if ever set.
pub fn get(conn: &Connection, user_id: &str) -> Result<Option<PresenceRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, u.displayname, u.avatar_url
             FROM presence p JOIN users u ON u.user_id = p.user_id WHERE p.user_id = ?1",
        )?
        .query_row([user_id], from_row)
        .optional()?)
}

/// Sets a user's presence at stream position `stream`.
pub fn set(
    conn: &Connection,
    user_id: &str,
    state: &str,
    status_msg: Option<&str>,
    last_active_ts: i64,
    stream: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,
            status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
            stream = excluded.stream",
    )?
    .execute(params![user_id, state, status_msg, last_active_ts, stream])?;
    Ok(())
}

/// Records activity without telling anyone (no stream position).
pub fn touch(conn: &Connection, user_id: &str, last_active_ts: i64) -> Result<()> {
    conn.prepare_cached("UPDATE presence SET last_active_ts = ?2 WHERE user_id = ?1")?
        .execute(params![user_id, last_active_ts])?;
    Ok(())
}

/// Whether two users share a joined room.
pub fn share_a_room(conn: &Connection, a: &str, b: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM memberships m1 JOIN memberships m2 ON m1.room_id = m2.room_id
             WHERE m1.user_id = ?1 AND m1.membership = 'join'
               AND m2.user_id = ?2 AND m2.membership = 'join')",
        )?
        .query_row(params![a, b], |r| r.get(0))?)
}

/// Presence the user should hear about after `since`: their own if it changed, and that of
/// everyone sharing a joined room with them if it changed or if either of them joined that
/// room since (a new room-mate's presence is news even when it did not change).
pub fn changed_for(conn: &Connection, user_id: &str, since: i64) -> Result<Vec<PresenceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.user_id, coalesce(p.state, 'offline'), p.status_msg, p.last_active_ts,
                u.displayname, u.avatar_url
         FROM users u LEFT JOIN presence p ON p.user_id = u.user_id
         WHERE (u.user_id = ?1 AND p.stream > ?2) OR (u.user_id != ?1 AND EXISTS (
             SELECT 1 FROM memberships m1 JOIN memberships m2 ON m1.room_id = m2.room_id
             WHERE m1.user_id = ?1 AND m1.membership = 'join'
               AND m2.user_id = u.user_id AND m2.membership = 'join'
               AND (coalesce(p.stream, 0) > ?2 OR m1.stream > ?2 OR m2.stream > ?2)))
         ORDER BY coalesce(p.stream, 0), u.user_id",
    )?;
    let rows = stmt.query_map(params![user_id, since], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
