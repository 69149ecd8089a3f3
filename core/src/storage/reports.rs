//! Reports of events and rooms.

use rusqlite::{Connection, params};

use crate::error::Result;

/// A report as received.
#[derive(Debug, Clone)]
pub struct NewReport<'a> {
    /// The room reported, or the room of the event reported.
    pub room_id: &'a str,
    /// The event reported; `None` for a room report.
    pub event_id: Option<&'a str>,
    /// Who reported it.
    pub reporter: &'a str,
    /// Why.
    pub reason: Option<&'a str>,
    /// How offensive, -100 (most) to 0 (inoffensive).
    pub score: Option<i64>,
    /// When (ms since the epoch).
    pub received_ts: i64,
}

/// Stores a report.
pub fn insert(conn: &Connection, r: &NewReport<'_>) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO reports (room_id, event_id, reporter, reason, score, received_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        r.room_id,
        r.event_id,
        r.reporter,
        r.reason,
        r.score,
        r.received_ts
    ])?;
    Ok(())
}

/// How many reports were made about a room (its events included).
pub fn count_for_room(conn: &Connection, room_id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM reports WHERE room_id = ?1")?
        .query_row([room_id], |r| r.get(0))?)
}
