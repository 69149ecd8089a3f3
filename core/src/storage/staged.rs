//! The holding area: events that arrived before the events they depend on.
//!
//! Bounds are the caller's to enforce (see `federation::inbound`); this module only counts.

use rusqlite::{Connection, params};

use crate::error::Result;

/// An event waiting in the holding area.
#[derive(Debug, Clone)]
pub struct StagedEvent {
    /// Event id.
    pub event_id: String,
    /// Room id.
    pub room_id: String,
    /// The server that handed us the event.
    pub origin: String,
    /// The event's depth (events are tried shallowest first).
    pub depth: i64,
    /// The PDU, verified.
    pub json: String,
    /// When it arrived (ms since the epoch).
    pub received_ts: i64,
}

/// Puts an event in the holding area; returns false if it was already there.
pub fn stage(conn: &Connection, ev: &StagedEvent) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO staged_events (event_id, room_id, origin, depth, json, received_ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            ev.event_id,
            ev.room_id,
            ev.origin,
            ev.depth,
            ev.json,
            ev.received_ts
        ])?;
    Ok(n > 0)
}

/// Whether an event is in the holding area.
pub fn is_staged(conn: &Connection, event_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM staged_events WHERE event_id = ?1")?
        .exists([event_id])?)
}

/// How many events of a room wait.
pub fn count_in_room(conn: &Connection, room_id: &str) -> Result<usize> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM staged_events WHERE room_id = ?1")?
        .query_row([room_id], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// How many waiting events one server handed us.
pub fn count_from_origin(conn: &Connection, origin: &str) -> Result<usize> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM staged_events WHERE origin = ?1")?
        .query_row([origin], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The waiting events of a room, shallowest first, at most `limit`.
pub fn in_room(conn: &Connection, room_id: &str, limit: usize) -> Result<Vec<StagedEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, room_id, origin, depth, json, received_ts FROM staged_events
         WHERE room_id = ?1 ORDER BY depth, received_ts, event_id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![room_id, limit as i64], |r| {
        Ok(StagedEvent {
            event_id: r.get(0)?,
            room_id: r.get(1)?,
            origin: r.get(2)?,
            depth: r.get(3)?,
            json: r.get(4)?,
            received_ts: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Takes an event out of the holding area.
pub fn unstage(conn: &Connection, event_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM staged_events WHERE event_id = ?1")?
        .execute([event_id])?;
    Ok(())
}

/// Drops events that have waited since before `before_ts`; returns how many.
pub fn expire(conn: &Connection, before_ts: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM staged_events WHERE received_ts < ?1")?
        .execute([before_ts])?)
}

/// Rooms with waiting events.
pub fn rooms(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT room_id FROM staged_events")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Runs migration 014's recovery again: every rejected event becomes a stateless outlier and
/// waits in the holding area (for tests that write what earlier versions wrote).
#[cfg(test)]
pub(crate) fn recover_rejected_events(conn: &Connection) -> Result<()> {
    let migration = include_str!("migrations/014_staged_events.sql");
    let start = migration
        .find("-- Earlier versions rejected")
        .ok_or_else(|| crate::error::Error::Task("migration 014 changed shape".into()))?;
    let recovery = &migration[start..];
    conn.execute_batch(recovery)?;
    Ok(())
}
