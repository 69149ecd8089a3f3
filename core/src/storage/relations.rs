//! Relations between events (`content.m.relates_to`): the children of a page of events, thread
//! summaries, the threads of a room, and walks down relations of relations.
//!
//! Every function takes the part of the room's stream the reader may see as
//! `after < stream <= upto`; rejected events and outliers never count. Lists of ids travel to
//! SQLite as one JSON array (`json_each`), so a page costs one statement, not one per event.
//! A unary `+` keeps the planner off the `(room_id, stream)` index where the relation
//! indexes select far fewer rows.

use rusqlite::{Connection, params};

use super::events::{EVENT_COLUMNS, StoredEvent, event_from_row};
use crate::error::Result;

fn json_list<T: serde::Serialize>(items: &[T]) -> Result<String> {
    Ok(serde_json::to_string(items)?)
}

/// Events relating to any of `parents` with `rel_type`, oldest first, each with the id of
/// the parent it relates to.
pub fn children(
    conn: &Connection,
    room_id: &str,
    parents: &[&str],
    rel_type: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<(String, StoredEvent)>> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS}, relates_to FROM events
         WHERE relates_to IN (SELECT value FROM json_each(?1)) AND rel_type = ?2
           AND +room_id = ?3 AND rejected = 0 AND +stream > ?4 AND +stream <= ?5
         ORDER BY stream"
    ))?;
    let rows = stmt.query_map(
        params![json_list(parents)?, rel_type, room_id, after, upto],
        |r| Ok((r.get::<_, String>(15)?, event_from_row(r)?)),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Ids of the events relating to any of `parents` with `rel_type`, oldest first, as
/// `(parent, child)` pairs.
pub fn child_ids(
    conn: &Connection,
    room_id: &str,
    parents: &[&str],
    rel_type: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<(String, String)>> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT relates_to, event_id FROM events
         WHERE relates_to IN (SELECT value FROM json_each(?1)) AND rel_type = ?2
           AND +room_id = ?3 AND rejected = 0 AND +stream > ?4 AND +stream <= ?5
         ORDER BY stream",
    )?;
    let rows = stmt.query_map(
        params![json_list(parents)?, rel_type, room_id, after, upto],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The contents of the annotations (unredacted, not rejected) one sender made on an event
/// with one event type.
pub fn annotations_by(
    conn: &Connection,
    target: &str,
    sender: &str,
    event_type: &str,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT json FROM events
         WHERE relates_to = ?1 AND rel_type = 'm.annotation' AND sender = ?2 AND type = ?3
           AND rejected = 0",
    )?;
    let rows = stmt.query_map(params![target, sender, event_type], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a thread looks like to one reader.
#[derive(Debug, Clone)]
pub struct ThreadSummary {
    /// The thread root.
    pub root: String,
    /// Number of replies in the thread.
    pub count: i64,
    /// Stream position of the newest reply.
    pub latest: i64,
    /// Whether `user` sent any of the replies.
    pub user_replied: bool,
}

/// Summaries of the threads rooted at any of `roots` (roots without replies are left out).
pub fn thread_summaries(
    conn: &Connection,
    room_id: &str,
    roots: &[&str],
    user: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<ThreadSummary>> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT relates_to, count(*), max(stream), max(sender = ?3) FROM events
         WHERE relates_to IN (SELECT value FROM json_each(?1)) AND rel_type = 'm.thread'
           AND room_id = ?2 AND rejected = 0 AND stream > ?4 AND stream <= ?5
         GROUP BY relates_to",
    )?;
    let rows = stmt.query_map(
        params![json_list(roots)?, room_id, user, after, upto],
        |r| {
            Ok(ThreadSummary {
                root: r.get(0)?,
                count: r.get(1)?,
                latest: r.get(2)?,
                user_replied: r.get::<_, i64>(3)? != 0,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The events at these stream positions, in stream order.
pub fn events_at(conn: &Connection, streams: &[i64]) -> Result<Vec<StoredEvent>> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE stream IN (SELECT value FROM json_each(?1)) ORDER BY stream"
    ))?;
    let rows = stmt.query_map([json_list(streams)?], event_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// These events (those that exist), in stream order.
pub fn events_by_id(conn: &Connection, ids: &[&str]) -> Result<Vec<StoredEvent>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE event_id IN (SELECT value FROM json_each(?1)) ORDER BY stream"
    ))?;
    let rows = stmt.query_map([json_list(ids)?], event_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A room's thread roots the reader may see, newest reply first: `(root, latest reply's
/// stream position)` for threads whose latest reply is below `before`. With `participant`,
/// only threads that user started or replied to.
pub fn thread_roots(
    conn: &Connection,
    room_id: &str,
    participant: Option<&str>,
    after: i64,
    upto: i64,
    before: i64,
    limit: usize,
) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.relates_to, max(t.stream) AS latest FROM events t
         JOIN events r ON r.event_id = t.relates_to
         WHERE t.room_id = ?1 AND t.rel_type = 'm.thread' AND t.relates_to IS NOT NULL
           AND t.rejected = 0 AND +t.stream > ?2 AND +t.stream <= ?3
           AND r.room_id = ?1 AND r.rejected = 0 AND r.stream > ?2 AND r.stream <= ?3
         GROUP BY t.relates_to
         HAVING latest < ?4 AND (?5 IS NULL OR r.sender = ?5 OR max(t.sender = ?5) = 1)
         ORDER BY latest DESC LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![room_id, after, upto, before, participant, limit as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Which events `/relations` lists.
#[derive(Debug, Clone)]
pub struct RelatedQuery<'a> {
    /// The room.
    pub room_id: &'a str,
    /// The parent event.
    pub event_id: &'a str,
    /// Only relations of this type (applies at every level).
    pub rel_type: Option<&'a str>,
    /// Only events of this type (applies at every level).
    pub event_type: Option<&'a str>,
    /// 1 for direct children; more to follow relations of relations.
    pub max_depth: u32,
    /// The reader sees `visible_after < stream <= visible_upto`.
    pub visible_after: i64,
    /// See `visible_after`.
    pub visible_upto: i64,
    /// The page: `after < stream <= upto`.
    pub after: i64,
    /// See `after`.
    pub upto: i64,
    /// Page size.
    pub limit: usize,
    /// Newest first (else oldest first).
    pub newest_first: bool,
}

/// Events relating to an event, directly or (up to `max_depth`) through other relations,
/// that match the filters at every step.
pub fn related_events(conn: &Connection, q: &RelatedQuery<'_>) -> Result<Vec<StoredEvent>> {
    let order = if q.newest_first { "DESC" } else { "ASC" };
    let mut stmt = conn.prepare_cached(&format!(
        "WITH RECURSIVE related(event_id, depth) AS (
             SELECT ?1, 0
             UNION
             SELECT e.event_id, related.depth + 1 FROM related
             JOIN events e ON e.relates_to = related.event_id
             WHERE related.depth < ?2 AND +e.room_id = ?3 AND e.rel_type IS NOT NULL
               AND (?4 IS NULL OR e.rel_type = ?4) AND (?5 IS NULL OR e.type = ?5)
               AND e.rejected = 0 AND +e.stream > ?6 AND +e.stream <= ?7
         )
         SELECT {EVENT_COLUMNS} FROM events
         WHERE event_id IN (SELECT event_id FROM related WHERE depth > 0)
           AND stream > ?8 AND stream <= ?9
         ORDER BY stream {order} LIMIT ?10"
    ))?;
    let rows = stmt.query_map(
        params![
            q.event_id,
            q.max_depth,
            q.room_id,
            q.rel_type,
            q.event_type,
            q.visible_after,
            q.visible_upto,
            q.after,
            q.upto,
            q.limit as i64
        ],
        event_from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
