//! Per-device inboxes of to-device messages, and the transaction ids of their senders.

use rusqlite::{Connection, params};

use crate::error::Result;

/// How long a `/sendToDevice` transaction id is remembered, in milliseconds.
const TXN_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// A message waiting in a device's inbox.
#[derive(Debug, Clone)]
pub struct ToDeviceRow {
    /// Stream position at which it was stored.
    pub stream: i64,
    /// Who sent it.
    pub sender: String,
    /// Event type.
    pub event_type: String,
    /// Content, as JSON.
    pub content: String,
}

/// Records a transaction id of a sending device; false if it was seen before. Ids older
/// than a day are forgotten on the way.
pub fn record_txn(
    conn: &Connection,
    sender: &str,
    sender_device: &str,
    txn_id: &str,
    now: i64,
) -> Result<bool> {
    conn.prepare_cached(
        "DELETE FROM to_device_txns WHERE sender = ?1 AND sender_device = ?2 AND ts < ?3",
    )?
    .execute(params![sender, sender_device, now - TXN_TTL_MS])?;
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO to_device_txns (sender, sender_device, txn_id, ts)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![sender, sender_device, txn_id, now])?;
    Ok(n == 1)
}

/// Puts a message in a device's inbox at stream position `stream`.
pub fn insert(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    stream: i64,
    sender: &str,
    event_type: &str,
    content: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO to_device (user_id, device_id, stream, sender, type, content)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        user_id, device_id, stream, sender, event_type, content
    ])?;
    Ok(())
}

/// How many messages wait in a device's inbox from senders of `server` (a user id suffix).
pub fn pending_from_server(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    server: &str,
) -> Result<usize> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM to_device
             WHERE user_id = ?1 AND device_id = ?2 AND sender LIKE '%:' || ?3",
        )?
        .query_row(params![user_id, device_id, server], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Messages of a device's inbox stored in `(after, upto]`, oldest first, at most `limit`.
pub fn pending(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<ToDeviceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stream, sender, type, content FROM to_device
         WHERE user_id = ?1 AND device_id = ?2 AND stream > ?3 AND stream <= ?4
         ORDER BY stream, id LIMIT ?5",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![user_id, device_id, after, upto, limit], |r| {
        Ok(ToDeviceRow {
            stream: r.get(0)?,
            sender: r.get(1)?,
            event_type: r.get(2)?,
            content: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether a device's inbox still holds messages stored at or before `upto`.
pub fn has_delivered(conn: &Connection, user_id: &str, device_id: &str, upto: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM to_device WHERE user_id = ?1 AND device_id = ?2 AND stream <= ?3 LIMIT 1",
        )?
        .exists(params![user_id, device_id, upto])?)
}

/// Deletes the messages of a device's inbox stored at or before `upto`; returns how many.
pub fn delete_upto(conn: &Connection, user_id: &str, device_id: &str, upto: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM to_device WHERE user_id = ?1 AND device_id = ?2 AND stream <= ?3",
        )?
        .execute(params![user_id, device_id, upto])?)
}
