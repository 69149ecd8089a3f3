//! Push rules and unread notification counts.

use rusqlite::{Connection, params};

use crate::error::Result;

/// Account data type under which a user's push rules are stored (and shown in `/sync`).
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// A joined member of a room, as push rule evaluation needs it.
#[derive(Debug, Clone)]
pub struct JoinedMember {
    /// The user.
    pub user_id: String,
    /// Their current member event.
    pub member_event: String,
    /// Whether the user has an account on this node.
    pub local: bool,
    /// Their stored push rules (`m.push_rules` account data), if they ever changed them.
    pub rules: Option<String>,
}

/// Every joined member of a room; local ones come with their stored push rules.
pub fn joined_members(conn: &Connection, room_id: &str) -> Result<Vec<JoinedMember>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.user_id, m.event_id, u.user_id IS NOT NULL AND u.deactivated = 0, ad.content
         FROM memberships m
         LEFT JOIN users u ON u.user_id = m.user_id
         LEFT JOIN account_data ad
            ON ad.user_id = m.user_id AND ad.room_id = '' AND ad.type = 'm.push_rules'
         WHERE m.room_id = ?1 AND m.membership = 'join'",
    )?;
    let rows = stmt.query_map([room_id], |r| {
        Ok(JoinedMember {
            user_id: r.get(0)?,
            member_event: r.get(1)?,
            local: r.get(2)?,
            rules: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records that the event at `stream` notifies `user_id`.
pub fn insert_action(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    stream: i64,
    thread_id: &str,
    highlight: bool,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO push_actions (user_id, room_id, stream, thread_id, highlight)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, room_id, stream, thread_id, highlight])?;
    Ok(())
}

/// Which notifications a read receipt clears.
#[derive(Debug, Clone, Copy)]
pub enum ReceiptScope<'a> {
    /// An unthreaded receipt: every thread.
    All,
    /// A threaded receipt: one thread (`""` for the main timeline).
    Thread(&'a str),
}

/// Clears a user's notifications in a room up to and including stream position `upto`.
pub fn clear_upto(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    scope: ReceiptScope<'_>,
    upto: i64,
) -> Result<()> {
    match scope {
        ReceiptScope::All => conn
            .prepare_cached(
                "DELETE FROM push_actions WHERE user_id = ?1 AND room_id = ?2 AND stream <= ?3",
            )?
            .execute(params![user_id, room_id, upto])?,
        ReceiptScope::Thread(thread) => conn
            .prepare_cached(
                "DELETE FROM push_actions
                 WHERE user_id = ?1 AND room_id = ?2 AND stream <= ?3 AND thread_id = ?4",
            )?
            .execute(params![user_id, room_id, upto, thread])?,
    };
    Ok(())
}

/// Forgets every notification of a user in a room (they left it).
pub fn clear_room(conn: &Connection, user_id: &str, room_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM push_actions WHERE user_id = ?1 AND room_id = ?2")?
        .execute(params![user_id, room_id])?;
    Ok(())
}

/// Unread counts of a user in a room per thread (`""` = main timeline):
/// `(thread_id, notification_count, highlight_count)`.
pub fn counts(conn: &Connection, user_id: &str, room_id: &str) -> Result<Vec<(String, u64, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT thread_id, count(*), sum(highlight) FROM push_actions
         WHERE user_id = ?1 AND room_id = ?2 GROUP BY thread_id",
    )?;
    let rows = stmt.query_map(params![user_id, room_id], |r| {
        let count: i64 = r.get(1)?;
        let highlights: Option<i64> = r.get(2)?;
        Ok((r.get(0)?, count as u64, highlights.unwrap_or(0) as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
