//! Queries for catching up with a peer: the rooms two servers share, which events are already
//! in the timeline, and the outbox of one destination.

use rusqlite::{Connection, params};

use crate::error::Result;

/// Rooms where both `local` and `server` have a joined member.
pub fn rooms_shared_with(conn: &Connection, local: &str, server: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id FROM memberships
           WHERE membership = 'join' AND substr(user_id, instr(user_id, ':') + 1) = ?1
         INTERSECT
         SELECT room_id FROM memberships
           WHERE membership = 'join' AND substr(user_id, instr(user_id, ':') + 1) = ?2
         ORDER BY room_id",
    )?;
    let rows = stmt.query_map(params![local, server], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Which of `ids` this node has stored, in the timeline or as outliers.
pub fn known_events(conn: &Connection, ids: &[String]) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM events WHERE event_id = ?1")?;
    let mut out = Vec::new();
    for id in ids {
        if stmt.exists([id])? {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// How many events are queued for `destination`.
pub fn queued_for(conn: &Connection, destination: &str) -> Result<usize> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM outbox WHERE destination = ?1")?
        .query_row([destination], |r| r.get(0))?;
    Ok(n as usize)
}

/// Forgets everything queued for `destination` (events and EDUs); returns how many events.
/// Catch-up on the next connection brings the destination up to date instead.
pub fn drop_queue(conn: &Connection, destination: &str) -> Result<usize> {
    let n = conn
        .prepare_cached("DELETE FROM outbox WHERE destination = ?1")?
        .execute([destination])?;
    conn.prepare_cached("DELETE FROM edu_outbox WHERE destination = ?1")?
        .execute([destination])?;
    Ok(n)
}
