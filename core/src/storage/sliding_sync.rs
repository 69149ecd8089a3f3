//! Sliding sync (MSC4186) connection state, and the look-ups that find what changed.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// A connection: one device may hold several, told apart by `conn_id`.
#[derive(Debug, Clone, Copy)]
pub struct ConnKey<'a> {
    /// The user.
    pub user_id: &'a str,
    /// The device.
    pub device_id: &'a str,
    /// The client's connection id (empty when it gave none).
    pub conn_id: &'a str,
}

/// What a `pos` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The global stream position the response covered.
    pub stream: i64,
    /// The typing serial the response covered.
    pub typing: u64,
}

/// The position `pos_id` of a connection, if it exists.
pub fn position(conn: &Connection, key: ConnKey<'_>, pos_id: i64) -> Result<Option<Position>> {
    Ok(conn
        .prepare_cached(
            "SELECT stream, typing FROM sliding_sync_positions
             WHERE pos_id = ?1 AND user_id = ?2 AND device_id = ?3 AND conn_id = ?4",
        )?
        .query_row(
            params![pos_id, key.user_id, key.device_id, key.conn_id],
            |r| {
                Ok(Position {
                    stream: r.get(0)?,
                    typing: r.get::<_, i64>(1)?.max(0) as u64,
                })
            },
        )
        .optional()?)
}

/// Forgets everything of a connection (a request without `pos` starts it afresh).
pub fn reset_connection(conn: &Connection, key: ConnKey<'_>) -> Result<()> {
    let p = params![key.user_id, key.device_id, key.conn_id];
    conn.prepare_cached(
        "DELETE FROM sliding_sync_rooms WHERE user_id = ?1 AND device_id = ?2 AND conn_id = ?3",
    )?
    .execute(p)?;
    conn.prepare_cached(
        "DELETE FROM sliding_sync_positions WHERE user_id = ?1 AND device_id = ?2 AND conn_id = ?3",
    )?
    .execute(p)?;
    conn.prepare_cached(
        "DELETE FROM sliding_sync_connections WHERE user_id = ?1 AND device_id = ?2 AND conn_id = ?3",
    )?
    .execute(p)?;
    Ok(())
}

/// The parameters (request body, JSON) of the connection's last request.
pub fn connection_params(conn: &Connection, key: ConnKey<'_>) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT params FROM sliding_sync_connections
             WHERE user_id = ?1 AND device_id = ?2 AND conn_id = ?3",
        )?
        .query_row(params![key.user_id, key.device_id, key.conn_id], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Stores the parameters of the connection's latest request.
pub fn set_connection_params(conn: &Connection, key: ConnKey<'_>, params_json: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sliding_sync_connections (user_id, device_id, conn_id, params)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device_id, conn_id) DO UPDATE SET params = excluded.params",
    )?
    .execute(params![
        key.user_id,
        key.device_id,
        key.conn_id,
        params_json
    ])?;
    Ok(())
}

/// The client came back with `pos_id`: it holds what that response and those it acknowledged
/// before carried, and nothing of any other response (later ones, or ones to requests it gave
/// up on). Their state is dropped and older rows are folded.
pub fn acknowledge(conn: &Connection, key: ConnKey<'_>, pos_id: i64) -> Result<()> {
    let parent: i64 = conn
        .prepare_cached(
            "SELECT parent FROM sliding_sync_positions
             WHERE pos_id = ?1 AND user_id = ?2 AND device_id = ?3 AND conn_id = ?4",
        )?
        .query_row(
            params![pos_id, key.user_id, key.device_id, key.conn_id],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten()
        .unwrap_or(0);
    let p = params![key.user_id, key.device_id, key.conn_id, pos_id];
    // Rows at or below the parent were acknowledged already (only such rows survive an
    // acknowledgement); rows above it belong to `pos_id` or to responses the client never used.
    conn.prepare_cached(
        "DELETE FROM sliding_sync_rooms
         WHERE user_id = ?1 AND device_id = ?2 AND conn_id = ?3 AND pos_id > ?5 AND pos_id <> ?4",
    )?
    .execute(params![
        key.user_id,
        key.device_id,
        key.conn_id,
        pos_id,
        parent
    ])?;
    conn.prepare_cached(
        "DELETE FROM sliding_sync_rooms AS old
         WHERE user_id = ?1 AND device_id = ?2 AND conn_id = ?3 AND pos_id < ?4
           AND EXISTS (SELECT 1 FROM sliding_sync_rooms AS new
                       WHERE new.user_id = old.user_id AND new.device_id = old.device_id
                         AND new.conn_id = old.conn_id AND new.room_id = old.room_id
                         AND new.pos_id > old.pos_id)",
    )?
    .execute(p)?;
    conn.prepare_cached(
        "DELETE FROM sliding_sync_positions
         WHERE user_id = ?1 AND device_id = ?2 AND conn_id = ?3 AND pos_id <> ?4",
    )?
    .execute(p)?;
    Ok(())
}

/// Rooms the connection has sent, each with the stream position it was brought up to.
pub fn known_rooms(conn: &Connection, key: ConnKey<'_>) -> Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, MAX(pos_id), stream FROM sliding_sync_rooms
         WHERE user_id = ?1 AND device_id = ?2 AND conn_id = ?3 GROUP BY room_id",
    )?;
    let rows = stmt.query_map(params![key.user_id, key.device_id, key.conn_id], |r| {
        Ok((r.get(0)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records a response to a request that came with `parent` (absent on a fresh connection): a
/// new position and the rooms it brought up to date. Returns the `pos`.
pub fn record_response(
    conn: &Connection,
    key: ConnKey<'_>,
    parent: Option<i64>,
    pos: Position,
    rooms: &[(String, i64)],
    now_ms: i64,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO sliding_sync_positions (user_id, device_id, conn_id, parent, stream, typing, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        key.user_id,
        key.device_id,
        key.conn_id,
        parent,
        pos.stream,
        pos.typing as i64,
        now_ms
    ])?;
    let pos_id = conn.last_insert_rowid();
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO sliding_sync_rooms (user_id, device_id, conn_id, room_id, pos_id, stream)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (room_id, stream) in rooms {
        stmt.execute(params![
            key.user_id,
            key.device_id,
            key.conn_id,
            room_id,
            pos_id,
            stream
        ])?;
    }
    Ok(pos_id)
}

/// Rooms of `user_id` (any membership) with new events, receipts, room account data or a
/// membership change in `(after, upto]`. The cost follows the number of changes, not of rooms.
pub fn rooms_changed_between(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if upto <= after {
        return Ok(out);
    }
    for sql in [
        "SELECT DISTINCT e.room_id FROM events e
         JOIN memberships m ON m.room_id = e.room_id AND m.user_id = ?3
         WHERE e.stream > ?1 AND e.stream <= ?2",
        "SELECT DISTINCT r.room_id FROM receipts r
         JOIN memberships m ON m.room_id = r.room_id AND m.user_id = ?3
         WHERE r.stream > ?1 AND r.stream <= ?2",
        "SELECT room_id FROM memberships WHERE stream > ?1 AND stream <= ?2 AND user_id = ?3",
        "SELECT room_id FROM account_data
         WHERE user_id = ?3 AND room_id <> '' AND stream > ?1 AND stream <= ?2",
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![after, upto, user_id], |r| r.get::<_, String>(0))?;
        for room in rows {
            out.insert(room?);
        }
    }
    Ok(out)
}

/// Whether the user's own receipts in `room_id` changed in `(after, upto]` (they move the
/// room's unread counts, so the room goes out again).
pub fn own_receipt_between(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    after: i64,
    upto: i64,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM receipts
             WHERE room_id = ?1 AND user_id = ?2 AND stream > ?3 AND stream <= ?4)",
        )?
        .query_row(params![room_id, user_id, after, upto], |r| r.get(0))?)
}

/// Whether the user's global account data changed in `(after, upto]`.
pub fn global_account_data_changed(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM account_data
             WHERE user_id = ?1 AND room_id = '' AND stream > ?2 AND stream <= ?3 LIMIT 1",
        )?
        .query_row(params![user_id, after, upto], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The stream position of the newest event of one of `types` in a room (its `bump_stamp`).
pub fn newest_of_types(conn: &Connection, room_id: &str, types: &[&str]) -> Result<Option<i64>> {
    // Walks back from the newest event: usually only a few rows are read.
    let mut stmt = conn.prepare_cached(
        "SELECT stream, type FROM events
         WHERE room_id = ?1 AND stream IS NOT NULL AND rejected = 0 AND outlier = 0
         ORDER BY stream DESC",
    )?;
    let mut rows = stmt.query([room_id])?;
    while let Some(row) = rows.next()? {
        let ty: String = row.get(1)?;
        if types.contains(&ty.as_str()) {
            return Ok(Some(row.get(0)?));
        }
    }
    Ok(None)
}
