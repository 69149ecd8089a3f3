//! The full-text index of events (SQLite FTS5).

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::error::Result;

/// The content key an event type is searched by, if any.
pub fn searchable_key(event_type: &str) -> Option<&'static str> {
    match event_type {
        "m.room.message" => Some("content.body"),
        "m.room.name" => Some("content.name"),
        "m.room.topic" => Some("content.topic"),
        _ => None,
    }
}

/// How far (in stream positions, so also in messages) the index may fall behind the
/// timeline. A batch is written by the transaction that stores a searchable event this far
/// past the index, or before any search.
const BATCH: i64 = 64;

/// Called for a searchable event stored at `stream`: indexes the waiting batch once it is
/// full. Until then the event waits, so that a message costs no index write of its own.
pub fn index_when_due(conn: &Connection, stream: i64) -> Result<()> {
    if stream - indexed_upto(conn)? >= BATCH {
        catch_up(conn)?;
    }
    Ok(())
}

fn indexed_upto(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT stream FROM search_progress WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// Adds every searchable timeline event not yet indexed. Runs in a write transaction, before
/// each search and when a batch is full. Which events are searchable is `searchable_key`'s to
/// say, so every event past the index is looked at and the index moves past all of them.
pub fn catch_up(conn: &Connection) -> Result<()> {
    let from = indexed_upto(conn)?;
    let waiting: Vec<(i64, i64, String, String)> = conn
        .prepare_cached(
            "SELECT nid, stream, type, json FROM events
             WHERE stream > ?1 AND redacted_by IS NULL ORDER BY stream",
        )?
        .query_map([from], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let Some(upto) = waiting.last().map(|w| w.1) else {
        return Ok(());
    };
    for (nid, _, ty, json) in &waiting {
        index_event(conn, *nid, ty, json)?;
    }
    conn.prepare_cached("UPDATE search_progress SET stream = ?1 WHERE id = 1")?
        .execute([upto])?;
    Ok(())
}

/// Adds one stored event to the index if it has searchable text.
fn index_event(conn: &Connection, nid: i64, event_type: &str, json: &str) -> Result<()> {
    let Some(key) = searchable_key(event_type) else {
        return Ok(());
    };
    let field = key.trim_start_matches("content.");
    let Ok(value) = serde_json::from_str::<Value>(json) else {
        return Ok(());
    };
    let Some(text) = value
        .get("content")
        .and_then(|c| c.get(field))
        .and_then(Value::as_str)
    else {
        return Ok(());
    };
    conn.prepare_cached("INSERT INTO event_search (rowid, value, key) VALUES (?1, ?2, ?3)")?
        .execute(params![nid, text, key])?;
    Ok(())
}

/// Removes an event from the index (it was redacted).
pub fn unindex_event(conn: &Connection, event_id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM event_search WHERE rowid = (SELECT nid FROM events WHERE event_id = ?1)",
    )?
    .execute([event_id])?;
    Ok(())
}

/// One match of a search: the event, its room, its stream position and its rank (higher is
/// better).
#[derive(Debug, Clone)]
pub struct Hit {
    /// Event id.
    pub event_id: String,
    /// Room id.
    pub room_id: String,
    /// Stream position.
    pub stream: i64,
    /// Relevance; higher is better.
    pub rank: f64,
}

/// Every indexed event matching the FTS5 `query` under one of `keys`, best first.
pub fn search(conn: &Connection, query: &str, keys: &[&str]) -> Result<Vec<Hit>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.event_id, e.room_id, e.stream, bm25(event_search), s.key
         FROM event_search s JOIN events e ON e.nid = s.rowid
         WHERE event_search MATCH ?1 AND e.stream IS NOT NULL AND e.rejected = 0
         ORDER BY bm25(event_search), e.stream DESC",
    )?;
    let rows = stmt.query_map([query], |r| {
        Ok((
            Hit {
                event_id: r.get(0)?,
                room_id: r.get(1)?,
                stream: r.get(2)?,
                rank: -r.get::<_, f64>(3)?,
            },
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hit, key) = row?;
        if keys.contains(&key.as_str()) {
            out.push(hit);
        }
    }
    Ok(out)
}
