//! Presence: of local users, and of other servers' users as their servers told us.

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
/// everyone sharing a joined room with them (local users and other servers' users we have
/// presence for) if it changed or if either of them joined that room since (a new
/// room-mate's presence is news even when it did not change).
pub fn changed_for(conn: &Connection, user_id: &str, since: i64) -> Result<Vec<PresenceRow>> {
    // Start from the user's rooms and their members (an index walk), not from every user
    // the node knows: the cost follows the user's rooms, not the size of the node.
    let mut stmt = conn.prepare_cached(
        "WITH mine AS (
             SELECT room_id, stream FROM memberships WHERE user_id = ?1 AND membership = 'join'
         ),
         candidates AS (
             SELECT m2.user_id AS user_id, max(max(mine.stream, m2.stream)) > ?2 AS new_mate
             FROM mine JOIN memberships m2 ON m2.room_id = mine.room_id
             WHERE m2.membership = 'join' AND m2.user_id != ?1
             GROUP BY m2.user_id
             UNION ALL
             SELECT ?1, 0
         )
         SELECT x.user_id, x.state, x.status_msg, x.last_active_ts, x.displayname, x.avatar_url
         FROM candidates c JOIN
              (SELECT u.user_id AS user_id, coalesce(p.state, 'offline') AS state,
                      p.status_msg AS status_msg, p.last_active_ts AS last_active_ts,
                      u.displayname AS displayname, u.avatar_url AS avatar_url,
                      coalesce(p.stream, 0) AS stream
               FROM users u LEFT JOIN presence p ON p.user_id = u.user_id
               UNION ALL
               SELECT user_id, state, status_msg, last_active_ts, NULL, NULL, stream
               FROM remote_presence) x ON x.user_id = c.user_id
         WHERE x.stream > ?2 OR c.new_mate
         ORDER BY x.stream, x.user_id",
    )?;
    let rows = stmt.query_map(params![user_id, since], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What another server last told us of one of its users' presence.
pub fn get_remote(conn: &Connection, user_id: &str) -> Result<Option<PresenceRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT user_id, state, status_msg, last_active_ts, NULL, NULL
             FROM remote_presence WHERE user_id = ?1",
        )?
        .query_row([user_id], from_row)
        .optional()?)
}

/// Records another server's user's presence at stream position `stream`.
pub fn set_remote(
    conn: &Connection,
    user_id: &str,
    state: &str,
    status_msg: Option<&str>,
    last_active_ts: Option<i64>,
    stream: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO remote_presence (user_id, state, status_msg, last_active_ts, stream)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,
            status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
            stream = excluded.stream",
    )?
    .execute(params![user_id, state, status_msg, last_active_ts, stream])?;
    Ok(())
}

/// Other servers with a member in a room `user_id` has joined: where their presence goes.
pub fn servers_sharing_rooms(conn: &Connection, user_id: &str, local: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT substr(m2.user_id, instr(m2.user_id, ':') + 1)
         FROM memberships m1 JOIN memberships m2 ON m1.room_id = m2.room_id
         WHERE m1.user_id = ?1 AND m1.membership = 'join' AND m2.membership = 'join'",
    )?;
    let rows = stmt.query_map([user_id], |r| r.get::<_, String>(0))?;
    Ok(rows
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|s| s != local)
        .collect())
}

/// The presence of this server's users joined to `room_id` (those who ever set one).
pub fn local_members_with_presence(
    conn: &Connection,
    room_id: &str,
    local: &str,
) -> Result<Vec<PresenceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, NULL, NULL
         FROM memberships m JOIN presence p ON p.user_id = m.user_id
         WHERE m.room_id = ?1 AND m.membership = 'join'
           AND substr(m.user_id, instr(m.user_id, ':') + 1) = ?2",
    )?;
    let rows = stmt.query_map(params![room_id, local], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether `user_id` (of another server) is joined to a room this server knows.
pub fn is_joined_somewhere(conn: &Connection, user_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM memberships WHERE user_id = ?1 AND membership = 'join')",
        )?
        .query_row([user_id], |r| r.get(0))?)
}
