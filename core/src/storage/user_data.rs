//! Per-user data: account data, receipts and stored filters.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Sets account data (`room_id` empty for global data) at stream position `stream`.
pub fn set_account_data(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    ty: &str,
    content: &str,
    stream: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO account_data (user_id, room_id, type, content, stream) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream = excluded.stream",
    )?
    .execute(params![user_id, room_id, ty, content, stream])?;
    Ok(())
}

/// Gets one piece of account data.
pub fn get_account_data(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    ty: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT content FROM account_data WHERE user_id = ?1 AND room_id = ?2 AND type = ?3",
        )?
        .query_row(params![user_id, room_id, ty], |r| r.get(0))
        .optional()?)
}

/// Account data changed after `since`: `(room_id, type, content)`, room_id empty for global.
pub fn account_data_since(
    conn: &Connection,
    user_id: &str,
    since: i64,
) -> Result<Vec<(String, String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, type, content FROM account_data WHERE user_id = ?1 AND stream > ?2 ORDER BY stream",
    )?;
    let rows = stmt.query_map(params![user_id, since], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A read receipt.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Reader.
    pub user_id: String,
    /// `m.read` or `m.read.private`.
    pub receipt_type: String,
    /// Thread id (empty for unthreaded).
    pub thread_id: String,
    /// The event read up to.
    pub event_id: String,
    /// When.
    pub ts: i64,
}

/// Stores a receipt at stream position `stream`.
pub fn set_receipt(conn: &Connection, room_id: &str, r: &Receipt, stream: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET
            event_id = excluded.event_id, ts = excluded.ts, stream = excluded.stream",
    )?
    .execute(params![
        room_id,
        r.user_id,
        r.receipt_type,
        r.thread_id,
        r.event_id,
        r.ts,
        stream
    ])?;
    Ok(())
}

/// Receipts of a room changed after `since`.
pub fn receipts_since(conn: &Connection, room_id: &str, since: i64) -> Result<Vec<Receipt>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, receipt_type, thread_id, event_id, ts FROM receipts
         WHERE room_id = ?1 AND stream > ?2 ORDER BY stream",
    )?;
    let rows = stmt.query_map(params![room_id, since], |r| {
        Ok(Receipt {
            user_id: r.get(0)?,
            receipt_type: r.get(1)?,
            thread_id: r.get(2)?,
            event_id: r.get(3)?,
            ts: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Rooms with a receipt stored at a stream position above `after` (searched through the
/// stream index).
pub fn rooms_with_receipts_after(
    conn: &Connection,
    after: i64,
) -> Result<std::collections::HashSet<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT room_id FROM receipts WHERE stream > ?1 ORDER BY stream")?;
    let rows = stmt.query_map([after], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a filter and returns its id.
pub fn insert_filter(conn: &Connection, user_id: &str, json: &str) -> Result<i64> {
    let next: i64 = conn
        .prepare_cached("SELECT coalesce(max(filter_id), -1) + 1 FROM filters WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))?;
    conn.execute(
        "INSERT INTO filters (user_id, filter_id, json) VALUES (?1, ?2, ?3)",
        params![user_id, next, json],
    )?;
    Ok(next)
}

/// Loads a stored filter.
pub fn get_filter(conn: &Connection, user_id: &str, filter_id: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT json FROM filters WHERE user_id = ?1 AND filter_id = ?2")?
        .query_row(params![user_id, filter_id], |r| r.get(0))
        .optional()?)
}
