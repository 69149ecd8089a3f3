//! Federation bookkeeping: the outbox and invites from other servers.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Queues an event for every server with a joined member in the room, except `local` and
/// `exclude`.
pub fn enqueue_for_room(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
    local: &str,
    exclude: Option<&str>,
    now: i64,
) -> Result<usize> {
    let servers = servers_in_room(conn, room_id)?;
    let mut n = 0;
    for server in servers {
        if server == local || Some(server.as_str()) == exclude {
            continue;
        }
        enqueue(conn, &server, event_id, now)?;
        n += 1;
    }
    Ok(n)
}

/// Queues one event for one destination.
pub fn enqueue(conn: &Connection, destination: &str, event_id: &str, now: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO outbox (destination, event_id, created_ts) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![destination, event_id, now])?;
    Ok(())
}

/// Drops what waits for `destination` beyond its `keep` newest events, and anything queued
/// before `older_than` (ms): a server that stays away catches up from the room's graph when it
/// connects again, so its queue need not grow without bound. Returns how many were dropped.
pub fn trim_queue(
    conn: &Connection,
    destination: &str,
    keep: usize,
    older_than: i64,
) -> Result<usize> {
    let n = conn
        .prepare_cached(
            "DELETE FROM outbox WHERE destination = ?1 AND (created_ts < ?3 OR id <= (
                 SELECT id FROM outbox WHERE destination = ?1
                 ORDER BY id DESC LIMIT 1 OFFSET ?2))",
        )?
        .execute(params![destination, keep as i64, older_than])?;
    Ok(n)
}

/// Servers with at least one joined member in a room.
pub fn servers_in_room(conn: &Connection, room_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT substr(user_id, instr(user_id, ':') + 1) FROM memberships
         WHERE room_id = ?1 AND membership = 'join'",
    )?;
    let rows = stmt.query_map([room_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Queues an EDU for every other server with a joined member in the room.
pub fn enqueue_edu_for_room(
    conn: &Connection,
    room_id: &str,
    local: &str,
    edu: &str,
) -> Result<()> {
    for server in servers_in_room(conn, room_id)? {
        if server != local {
            conn.prepare_cached("INSERT INTO edu_outbox (destination, json) VALUES (?1, ?2)")?
                .execute(params![server, edu])?;
        }
    }
    Ok(())
}

/// The oldest queued EDUs for a destination: `(id, json)`.
pub fn next_edus(conn: &Connection, destination: &str, limit: usize) -> Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, json FROM edu_outbox WHERE destination = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![destination, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes delivered EDUs.
pub fn delete_edus_upto(conn: &Connection, destination: &str, upto: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM edu_outbox WHERE destination = ?1 AND id <= ?2")?
        .execute(params![destination, upto])?;
    Ok(())
}

/// Destinations with queued events, EDUs or invites.
pub fn pending_destinations(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT destination FROM outbox UNION SELECT destination FROM edu_outbox
         UNION SELECT destination FROM invite_outbox",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The oldest queued items for a destination: `(id, event_id, pdu json)`.
pub fn next_batch(
    conn: &Connection,
    destination: &str,
    limit: usize,
) -> Result<Vec<(i64, String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.event_id, e.json FROM outbox o JOIN events e ON e.event_id = o.event_id
         WHERE o.destination = ?1 ORDER BY o.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![destination, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes delivered items (every id up to and including `upto`).
pub fn delete_upto(conn: &Connection, destination: &str, upto: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE destination = ?1 AND id <= ?2")?
        .execute(params![destination, upto])?;
    Ok(())
}

/// An invite of a user of another server, waiting to be sent to that server.
#[derive(Debug, Clone)]
pub struct QueuedInvite {
    /// Queue position.
    pub id: i64,
    /// The room.
    pub room_id: String,
    /// The invite event (already in the room).
    pub event_id: String,
}

/// Queues the federation invite for an invite event of a user of `destination`.
pub fn enqueue_invite(
    conn: &Connection,
    destination: &str,
    room_id: &str,
    event_id: &str,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO invite_outbox (destination, room_id, event_id, created_ts)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![destination, room_id, event_id, now])?;
    Ok(())
}

/// The oldest invites waiting for a destination.
pub fn next_invites(
    conn: &Connection,
    destination: &str,
    limit: usize,
) -> Result<Vec<QueuedInvite>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, room_id, event_id FROM invite_outbox WHERE destination = ?1
         ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![destination, limit as i64], |r| {
        Ok(QueuedInvite {
            id: r.get(0)?,
            room_id: r.get(1)?,
            event_id: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes an invite from the queue (delivered, refused or superseded).
pub fn delete_invite(conn: &Connection, id: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM invite_outbox WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Whether an invite event still waits to reach its invitee's server.
pub fn invite_queued(conn: &Connection, event_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM invite_outbox WHERE event_id = ?1")?
        .query_row([event_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Stores the stripped state that came with an invite.
pub fn set_invite_state(conn: &Connection, room_id: &str, user_id: &str, json: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO invite_states (room_id, user_id, json) VALUES (?1, ?2, ?3)
         ON CONFLICT (room_id, user_id) DO UPDATE SET json = excluded.json",
        params![room_id, user_id, json],
    )?;
    Ok(())
}

/// The stripped state that came with an invite, if any.
pub fn invite_state(conn: &Connection, room_id: &str, user_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT json FROM invite_states WHERE room_id = ?1 AND user_id = ?2")?
        .query_row(params![room_id, user_id], |r| r.get(0))
        .optional()?)
}

/// A remembered peer.
#[derive(Debug, Clone)]
pub struct PeerRow {
    /// Peer id.
    pub peer_id: String,
    /// Its server name, if a Neurite node.
    pub server_name: Option<String>,
    /// Known multiaddrs.
    pub addresses: Vec<String>,
    /// How it was found: `static`, `mdns`, `inbound` or `exchange`.
    pub discovered: String,
    /// When it was last connected or seen.
    pub last_seen_ts: i64,
}

/// Most peers the persistent address book holds; past it, the least recently seen that the
/// app did not add are dropped.
pub const MAX_REMEMBERED_PEERS: usize = 512;

/// Records a peer, merging addresses with what is known (the newest 8 are kept). A peer the
/// app added stays marked so. The book keeps at most [`MAX_REMEMBERED_PEERS`] peers.
pub fn upsert_peer(conn: &Connection, row: &PeerRow) -> Result<()> {
    let existing: Option<String> = conn
        .prepare_cached("SELECT addresses FROM peers WHERE peer_id = ?1")?
        .query_row([&row.peer_id], |r| r.get(0))
        .optional()?;
    let mut addresses: Vec<String> = existing
        .and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or_default();
    for a in &row.addresses {
        if !addresses.contains(a) {
            addresses.push(a.clone());
        }
    }
    // Keep the newest few addresses only.
    if addresses.len() > 8 {
        addresses.drain(..addresses.len() - 8);
    }
    conn.prepare_cached(
        "INSERT INTO peers (peer_id, server_name, addresses, discovered, last_seen_ts)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (peer_id) DO UPDATE SET addresses = excluded.addresses,
            last_seen_ts = excluded.last_seen_ts,
            server_name = coalesce(excluded.server_name, server_name),
            discovered = CASE WHEN excluded.discovered = 'static' THEN 'static'
                              ELSE discovered END",
    )?
    .execute(params![
        row.peer_id,
        row.server_name,
        serde_json::to_string(&addresses)?,
        row.discovered,
        row.last_seen_ts
    ])?;
    conn.prepare_cached(
        "DELETE FROM peers WHERE discovered != 'static' AND peer_id IN (
             SELECT peer_id FROM peers WHERE discovered != 'static'
             ORDER BY last_seen_ts DESC LIMIT -1 OFFSET ?1)",
    )?
    .execute([MAX_REMEMBERED_PEERS as i64])?;
    Ok(())
}

/// The remembered peers worth dialling at start, most recently seen first, at most `limit`:
/// those the app added, and those whose server shares a room with a user of `local` or has
/// something waiting in the outbox. A peer that only ever connected, or that another peer
/// told this node of, is not redialled.
pub fn peers_to_redial(conn: &Connection, local: &str, limit: usize) -> Result<Vec<PeerRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT peer_id, server_name, addresses, discovered, last_seen_ts FROM peers
         WHERE discovered = 'static'
            OR server_name IN (
                SELECT substr(m.user_id, instr(m.user_id, ':') + 1) FROM memberships m
                WHERE m.membership = 'join' AND m.room_id IN (
                    SELECT room_id FROM memberships
                    WHERE membership = 'join' AND user_id LIKE '%:' || ?1))
            OR server_name IN (
                SELECT destination FROM outbox UNION SELECT destination FROM edu_outbox
                UNION SELECT destination FROM invite_outbox)
         ORDER BY last_seen_ts DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![local, limit as i64], peer_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every remembered peer, most recently seen first.
pub fn peers(conn: &Connection) -> Result<Vec<PeerRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT peer_id, server_name, addresses, discovered, last_seen_ts FROM peers ORDER BY last_seen_ts DESC",
    )?;
    let rows = stmt.query_map([], peer_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A `peers` row read as `peer_id, server_name, addresses, discovered, last_seen_ts`.
fn peer_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerRow> {
    let addresses: String = r.get(2)?;
    Ok(PeerRow {
        peer_id: r.get(0)?,
        server_name: r.get(1)?,
        addresses: serde_json::from_str(&addresses).unwrap_or_default(),
        discovered: r.get(3)?,
        last_seen_ts: r.get(4)?,
    })
}

/// How many invites from users of `server` wait, unanswered, on users of `local`.
pub fn pending_invites_from(conn: &Connection, server: &str, local: &str) -> Result<usize> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM memberships m JOIN events e ON e.event_id = m.event_id
             WHERE m.membership = 'invite' AND m.user_id LIKE '%:' || ?2
               AND e.sender LIKE '%:' || ?1",
        )?
        .query_row(params![server, local], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Whether `server` has, or had, a member in the room (a user of it joined, or joined and
/// left): the servers that may ask for the room's events. A server that left, or that this
/// node resolved as gone without some of the events it holds, must still be able to fetch
/// what it lacks to reach the same state; each event still passes its history visibility.
pub fn server_was_in_room(conn: &Connection, room_id: &str, server: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM memberships WHERE room_id = ?1 AND user_id LIKE '%:' || ?2
               AND membership IN ('join', 'leave', 'ban') LIMIT 1",
        )?
        .query_row(params![room_id, server], |_| Ok(()))
        .optional()?
        .is_some())
}
