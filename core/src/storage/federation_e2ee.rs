//! End-to-end encryption across servers: cached device lists of remote users, the ids of
//! device-list updates announced for local users, received to-device message ids, and
//! EDUs queued for one destination.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// How long a received to-device message id is remembered, in milliseconds.
const RECEIVED_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Queues an EDU for one destination.
pub fn enqueue_edu(conn: &Connection, destination: &str, edu: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO edu_outbox (destination, json) VALUES (?1, ?2)")?
        .execute(params![destination, edu])?;
    Ok(())
}

/// Other servers with a joined member in a room where `user_id` is joined.
pub fn servers_sharing_with(conn: &Connection, user_id: &str, local: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT substr(other.user_id, instr(other.user_id, ':') + 1)
         FROM memberships me JOIN memberships other ON other.room_id = me.room_id
         WHERE me.user_id = ?1 AND me.membership = 'join' AND other.membership = 'join'",
    )?;
    let rows = stmt.query_map([user_id], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for server in rows {
        let server = server?;
        if server != local {
            out.push(server);
        }
    }
    Ok(out)
}

/// Takes the next device-list update id of a local user: `(prev, next)` (`prev` is 0 before
/// the first).
pub fn next_outbound_stream(conn: &Connection, user_id: &str) -> Result<(i64, i64)> {
    let prev = outbound_stream(conn, user_id)?;
    conn.prepare_cached(
        "INSERT INTO device_list_outbound (user_id, stream_id) VALUES (?1, ?2)
         ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id",
    )?
    .execute(params![user_id, prev + 1])?;
    Ok((prev, prev + 1))
}

/// The id of the last device-list update announced for a local user (0 if none).
pub fn outbound_stream(conn: &Connection, user_id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT stream_id FROM device_list_outbound WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The cached device list of a remote user: `(stream_id, json)`.
pub fn remote_device_list(conn: &Connection, user_id: &str) -> Result<Option<(i64, String)>> {
    Ok(conn
        .prepare_cached("SELECT stream_id, json FROM remote_device_lists WHERE user_id = ?1")?
        .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// The cached device list of a remote user if it can be trusted to be current: the user has
/// not joined any room since it was fetched (updates may have been missed before).
pub fn current_remote_device_list(conn: &Connection, user_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT r.json FROM remote_device_lists r WHERE r.user_id = ?1
               AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = ?1
                    AND m.membership = 'join' AND m.stream > r.cached_pos)",
        )?
        .query_row([user_id], |r| r.get(0))
        .optional()?)
}

/// Stores the device list of a remote user as fetched at local position `cached_pos`.
pub fn cache_remote_device_list(
    conn: &Connection,
    user_id: &str,
    stream_id: i64,
    cached_pos: i64,
    json: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO remote_device_lists (user_id, stream_id, cached_pos, json)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id,
            cached_pos = excluded.cached_pos, json = excluded.json",
    )?
    .execute(params![user_id, stream_id, cached_pos, json])?;
    Ok(())
}

/// Updates a cached device list with a change its server announced.
pub fn update_remote_device_list(
    conn: &Connection,
    user_id: &str,
    stream_id: i64,
    json: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE remote_device_lists SET stream_id = ?2, json = ?3 WHERE user_id = ?1",
    )?
    .execute(params![user_id, stream_id, json])?;
    Ok(())
}

/// Forgets the cached device list of a remote user (it will be fetched again).
pub fn delete_remote_device_list(conn: &Connection, user_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM remote_device_lists WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(())
}

/// Whether a remote user is joined to a room where a user of `local` is joined or invited:
/// their server then sends this server every change of their devices.
pub fn is_tracked(conn: &Connection, user_id: &str, local: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM memberships them JOIN memberships us
                ON us.room_id = them.room_id AND us.membership IN ('join', 'invite')
                AND substr(us.user_id, instr(us.user_id, ':') + 1) = ?2
             WHERE them.user_id = ?1 AND them.membership = 'join')",
        )?
        .query_row(params![user_id, local], |r| r.get(0))?)
}

/// Records a received to-device message id; false if it was received before. Ids older
/// than a week are forgotten on the way.
pub fn record_received_to_device(
    conn: &Connection,
    origin: &str,
    message_id: &str,
    now: i64,
) -> Result<bool> {
    conn.prepare_cached("DELETE FROM received_to_device WHERE ts < ?1")?
        .execute([now - RECEIVED_TTL_MS])?;
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO received_to_device (origin, message_id, ts) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![origin, message_id, now])?;
    Ok(n == 1)
}
