//! Events, the room graph, rooms and memberships.
//!
//! It stays one file (about 780 lines): events, the room graph (extremities and outliers),
//! rooms and memberships are rows of one schema that the same transactions write together,
//! and they share the row types and column lists defined here.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::Result;

/// An event as stored, with the node's bookkeeping around the PDU.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Event id.
    pub event_id: String,
    /// Room id.
    pub room_id: String,
    /// Stream position (None for outliers).
    pub stream: Option<i64>,
    /// Event type.
    pub event_type: String,
    /// State key, for state events.
    pub state_key: Option<String>,
    /// Sender.
    pub sender: String,
    /// Origin timestamp.
    pub origin_server_ts: i64,
    /// The PDU JSON (redacted form once redacted).
    pub json: String,
    /// State group before the event.
    pub state_before: Option<i64>,
    /// State group after the event.
    pub state_after: Option<i64>,
    /// Whether the event failed auth.
    pub rejected: bool,
    /// The redaction that redacted this event.
    pub redacted_by: Option<String>,
    /// For state events: the event this one replaced in the room state.
    pub prev_state: Option<String>,
    /// Device of the sender that sent it with a transaction id.
    pub txn_device: Option<String>,
    /// The client's transaction id.
    pub txn_id: Option<String>,
}

pub(crate) const EVENT_COLUMNS: &str = "event_id, room_id, stream, type, state_key, sender, origin_server_ts, \
     json, state_before, state_after, rejected, redacted_by, txn_device, txn_id, prev_state";

pub(crate) fn event_from_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        event_id: r.get(0)?,
        room_id: r.get(1)?,
        stream: r.get(2)?,
        event_type: r.get(3)?,
        state_key: r.get(4)?,
        sender: r.get(5)?,
        origin_server_ts: r.get(6)?,
        json: r.get(7)?,
        state_before: r.get(8)?,
        state_after: r.get(9)?,
        rejected: r.get(10)?,
        redacted_by: r.get(11)?,
        txn_device: r.get(12)?,
        txn_id: r.get(13)?,
        prev_state: r.get(14)?,
    })
}

/// A new event to insert.
#[derive(Debug)]
pub struct NewEvent<'a> {
    /// Event id.
    pub event_id: &'a str,
    /// Room id.
    pub room_id: &'a str,
    /// Stream position.
    pub stream: Option<i64>,
    /// Event type.
    pub event_type: &'a str,
    /// State key.
    pub state_key: Option<&'a str>,
    /// Sender.
    pub sender: &'a str,
    /// Origin timestamp.
    pub origin_server_ts: i64,
    /// Depth.
    pub depth: i64,
    /// PDU JSON.
    pub json: &'a str,
    /// State group before.
    pub state_before: Option<i64>,
    /// State group after.
    pub state_after: Option<i64>,
    /// The state event this one replaces.
    pub prev_state: Option<&'a str>,
    /// Relation target, from `content.m.relates_to.event_id`.
    pub relates_to: Option<&'a str>,
    /// Relation type.
    pub rel_type: Option<&'a str>,
    /// Sender's device, for local echo of transaction ids.
    pub txn_device: Option<&'a str>,
    /// Transaction id.
    pub txn_id: Option<&'a str>,
    /// Prev events, recorded as graph edges.
    pub prev_events: &'a [String],
    /// Kept out of the timeline (an auth-chain event, a soft-failed event, or one known only
    /// through another server's state).
    pub outlier: bool,
    /// Failed the authorization rules.
    pub rejected: bool,
}

/// Inserts an event and its graph edges.
pub fn insert_event(conn: &Connection, ev: &NewEvent<'_>) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (event_id, room_id, stream, type, state_key, sender, origin_server_ts,
            depth, json, state_before, state_after, relates_to, rel_type, txn_device, txn_id,
            prev_state, outlier, rejected)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        ev.event_id,
        ev.room_id,
        ev.stream,
        ev.event_type,
        ev.state_key,
        ev.sender,
        ev.origin_server_ts,
        ev.depth,
        ev.json,
        ev.state_before,
        ev.state_after,
        ev.relates_to,
        ev.rel_type,
        ev.txn_device,
        ev.txn_id,
        ev.prev_state,
        ev.outlier,
        ev.rejected,
    ])?;
    if let Some(stream) = ev.stream
        && super::search::searchable_key(ev.event_type).is_some()
    {
        super::search::index_when_due(conn, stream)?;
    }
    let mut edge = conn.prepare_cached(
        "INSERT OR IGNORE INTO event_edges (event_id, prev_event_id) VALUES (?1, ?2)",
    )?;
    for prev in ev.prev_events {
        edge.execute(params![ev.event_id, prev])?;
    }
    Ok(())
}

/// Removes an outlier that is about to be stored again with what is now known about it.
pub fn delete_outlier(conn: &Connection, event_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM events WHERE event_id = ?1 AND stream IS NULL")?
        .execute([event_id])?;
    Ok(())
}

/// Puts an outlier into the timeline at `stream`.
pub fn promote_outlier(
    conn: &Connection,
    event_id: &str,
    event_type: &str,
    stream: i64,
    relates_to: Option<&str>,
    rel_type: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE events SET stream = ?2, outlier = 0, relates_to = ?3, rel_type = ?4
         WHERE event_id = ?1 AND stream IS NULL",
    )?
    .execute(params![event_id, stream, relates_to, rel_type])?;
    if super::search::searchable_key(event_type).is_some() {
        super::search::index_when_due(conn, stream)?;
    }
    Ok(())
}

/// Records the state around an outlier whose state was learnt from another server.
pub fn set_outlier_state(
    conn: &Connection,
    event_id: &str,
    state_before: i64,
    state_after: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE events SET state_before = ?2, state_after = ?3 WHERE event_id = ?1 AND stream IS NULL",
    )?
    .execute(params![event_id, state_before, state_after])?;
    Ok(())
}

/// Loads one event.
pub fn get_event(conn: &Connection, event_id: &str) -> Result<Option<StoredEvent>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1"
        ))?
        .query_row([event_id], event_from_row)
        .optional()?)
}

/// Loads the PDU JSON of one event.
pub fn get_event_json(conn: &Connection, event_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT json FROM events WHERE event_id = ?1")?
        .query_row([event_id], |r| r.get(0))
        .optional()?)
}

/// The event a client's transaction id produced, if any. Transaction ids are scoped to the
/// device and the endpoint, so the room and event type are part of the key.
pub fn event_for_txn(
    conn: &Connection,
    sender: &str,
    device: &str,
    txn_id: &str,
    room_id: &str,
    event_type: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT event_id FROM events WHERE sender = ?1 AND txn_device = ?2 AND txn_id = ?3
             AND room_id = ?4 AND type = ?5",
        )?
        .query_row(params![sender, device, txn_id, room_id, event_type], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Events of a room with `after < stream <= upto`, oldest first, at most `limit`, taken
/// from the newest end when `newest_first` is set (the result is still oldest first).
pub fn room_events_between(
    conn: &Connection,
    room_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
    newest_first: bool,
) -> Result<Vec<StoredEvent>> {
    let order = if newest_first { "DESC" } else { "ASC" };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE room_id = ?1 AND stream > ?2 AND stream <= ?3 AND rejected = 0 AND outlier = 0
         ORDER BY stream {order} LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![room_id, after, upto, limit as i64], event_from_row)?;
    let mut events: Vec<StoredEvent> = rows.collect::<Result<_, _>>()?;
    if newest_first {
        events.reverse();
    }
    Ok(events)
}

/// Counts a room's events with `after < stream <= upto`.
pub fn count_room_events_between(
    conn: &Connection,
    room_id: &str,
    after: i64,
    upto: i64,
) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM events WHERE room_id = ?1 AND stream > ?2 AND stream <= ?3 AND rejected = 0 AND outlier = 0",
        )?
        .query_row(params![room_id, after, upto], |r| r.get(0))?)
}

/// Rooms with an event (of any kind) at a stream position above `after`. Ordered by stream
/// so that SQLite searches the stream index (`DISTINCT` would make it scan the room index).
pub fn rooms_with_events_after(
    conn: &Connection,
    after: i64,
) -> Result<std::collections::HashSet<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT room_id FROM events WHERE stream > ?1 ORDER BY stream")?;
    let rows = stmt.query_map([after], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the room has any event with `stream <= before` (used to decide whether a page
/// is the last one).
pub fn room_has_events_upto(conn: &Connection, room_id: &str, upto: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM events WHERE room_id = ?1 AND stream <= ?2 AND rejected = 0 LIMIT 1",
        )?
        .exists(params![room_id, upto])?)
}

/// Replaces an event's JSON with its redacted form and records the redaction.
pub fn mark_redacted(
    conn: &Connection,
    event_id: &str,
    redacted_json: &str,
    by: &str,
) -> Result<()> {
    super::search::unindex_event(conn, event_id)?;
    conn.execute(
        "UPDATE events SET json = ?2, redacted_by = ?3, relates_to = NULL, rel_type = NULL WHERE event_id = ?1",
        params![event_id, redacted_json, by],
    )?;
    Ok(())
}

/// Depth of an event.
pub fn event_depth(conn: &Connection, event_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT depth FROM events WHERE event_id = ?1")?
        .query_row([event_id], |r| r.get(0))
        .optional()?)
}

/// The forward extremities (events with no children yet) of a room.
pub fn forward_extremities(conn: &Connection, room_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id FROM forward_extremities WHERE room_id = ?1 ORDER BY event_id",
    )?;
    let rows = stmt.query_map([room_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The state groups after a room's forward extremities, deepest extremity first (ties by
/// event id).
pub fn extremity_states(conn: &Connection, room_id: &str) -> Result<Vec<Option<i64>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.state_after FROM forward_extremities f
         JOIN events e ON e.event_id = f.event_id
         WHERE f.room_id = ?1
         ORDER BY e.depth DESC, f.event_id",
    )?;
    let rows = stmt.query_map([room_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// At most `limit` forward extremities of a room, for a new event to cite, with their depths:
/// those sent by this node's users first (a user's latest join must be among what their next
/// event builds on, or other servers place that event where the user is not in the room),
/// then the deepest.
pub fn extremities_to_cite(
    conn: &Connection,
    room_id: &str,
    limit: usize,
) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.event_id, e.depth FROM forward_extremities f
         JOIN events e ON e.event_id = f.event_id
         LEFT JOIN users u ON u.user_id = e.sender
         WHERE f.room_id = ?1
         ORDER BY (u.user_id IS NOT NULL) DESC, e.depth DESC, f.event_id
         LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![room_id, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Makes `event_id` an extremity and removes the events it points to.
pub fn advance_extremities(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
    prevs: &[String],
) -> Result<()> {
    let mut del = conn
        .prepare_cached("DELETE FROM forward_extremities WHERE room_id = ?1 AND event_id = ?2")?;
    for prev in prevs {
        del.execute(params![room_id, prev])?;
    }
    // An event placed after one of its children (history fetched after a join that cites
    // it) is no extremity.
    if !has_timeline_child(conn, event_id)? {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO forward_extremities (room_id, event_id) VALUES (?1, ?2)",
        )?
        .execute(params![room_id, event_id])?;
    }
    Ok(())
}

/// Whether an event in the timeline cites `event_id` as a prev event.
pub fn has_timeline_child(conn: &Connection, event_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM event_edges e JOIN events c ON c.event_id = e.event_id
             WHERE e.prev_event_id = ?1 AND c.stream IS NOT NULL AND c.outlier = 0
               AND c.rejected = 0",
        )?
        .exists([event_id])?)
}

/// A room's version and state group.
#[derive(Debug, Clone)]
pub struct RoomRow {
    /// Room version id.
    pub room_version: String,
    /// Current state group.
    pub state_group: Option<i64>,
    /// Whether the room is in the public directory.
    pub published: bool,
}

/// Creates a room row.
pub fn insert_room(conn: &Connection, room_id: &str, version: &str, creator: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO rooms (room_id, room_version, creator) VALUES (?1, ?2, ?3)",
        params![room_id, version, creator],
    )?;
    Ok(())
}

/// Loads a room row.
pub fn get_room(conn: &Connection, room_id: &str) -> Result<Option<RoomRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT room_version, state_group, published FROM rooms WHERE room_id = ?1",
        )?
        .query_row([room_id], |r| {
            Ok(RoomRow {
                room_version: r.get(0)?,
                state_group: r.get(1)?,
                published: r.get(2)?,
            })
        })
        .optional()?)
}

/// Records the room's current state group.
pub fn set_room_state_group(conn: &Connection, room_id: &str, group: i64) -> Result<()> {
    conn.prepare_cached("UPDATE rooms SET state_group = ?2 WHERE room_id = ?1")?
        .execute(params![room_id, group])?;
    Ok(())
}

/// Sets whether the room is published in the room directory.
pub fn set_room_published(conn: &Connection, room_id: &str, published: bool) -> Result<()> {
    conn.execute(
        "UPDATE rooms SET published = ?2 WHERE room_id = ?1",
        params![room_id, published],
    )?;
    Ok(())
}

/// Rooms in the public directory.
pub fn published_rooms(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT room_id FROM rooms WHERE published = 1 ORDER BY room_id")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A user's membership in a room.
#[derive(Debug, Clone)]
pub struct MembershipRow {
    /// Room id.
    pub room_id: String,
    /// User id.
    pub user_id: String,
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    /// The member event.
    pub event_id: String,
    /// Stream position of the change.
    pub stream: i64,
    /// Whether the user forgot the room.
    pub forgotten: bool,
}

fn membership_from_row(r: &Row<'_>) -> rusqlite::Result<MembershipRow> {
    Ok(MembershipRow {
        room_id: r.get(0)?,
        user_id: r.get(1)?,
        membership: r.get(2)?,
        event_id: r.get(3)?,
        stream: r.get(4)?,
        forgotten: r.get(5)?,
    })
}

/// Records a membership change.
pub fn set_membership(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    membership: &str,
    event_id: &str,
    stream: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream, forgotten)
         VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT (room_id, user_id) DO UPDATE SET
            membership = excluded.membership, event_id = excluded.event_id,
            stream = excluded.stream, forgotten = 0",
    )?
    .execute(params![room_id, user_id, membership, event_id, stream])?;
    Ok(())
}

/// A user's membership in one room.
pub fn membership(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
) -> Result<Option<MembershipRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT room_id, user_id, membership, event_id, stream, forgotten FROM memberships
             WHERE room_id = ?1 AND user_id = ?2",
        )?
        .query_row(params![room_id, user_id], membership_from_row)
        .optional()?)
}

/// A local user whose membership in the room's current state is one of their own earlier
/// member events, while the latest member event they sent says otherwise (state resolution
/// preferred the older one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnMembershipDrift {
    pub user_id: String,
    /// Their membership in the current state.
    pub current: String,
    /// The latest member event they sent, and its membership.
    pub latest_event: String,
    pub latest: String,
}

/// The local users of a room whose current membership is an older choice of their own (see
/// [`OwnMembershipDrift`]). "Latest" is the order this node stored their events in: a local
/// user's member events are all made here, so that is the order they chose them in, whatever
/// the clocks of the servers that handed out join templates said.
pub fn own_membership_drift(conn: &Connection, room_id: &str) -> Result<Vec<OwnMembershipDrift>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.user_id, m.membership, l.event_id, l.json
         FROM memberships m
         JOIN users u ON u.user_id = m.user_id
         JOIN events c ON c.event_id = m.event_id
         JOIN events l ON l.nid = (
             SELECT MAX(e.nid) FROM events e
             WHERE e.room_id = m.room_id AND e.type = 'm.room.member'
               AND e.state_key = m.user_id AND e.sender = m.user_id AND e.rejected = 0)
         WHERE m.room_id = ?1 AND c.sender = m.user_id AND l.event_id != m.event_id",
    )?;
    let rows = stmt.query_map([room_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (user_id, current, latest_event, json) = row?;
        let latest = membership_in(&json);
        if latest != current {
            out.push(OwnMembershipDrift {
                user_id,
                current,
                latest_event,
                latest,
            });
        }
    }
    Ok(out)
}

/// The latest member event a user sent in a room, in the order this node stored them (see
/// [`own_membership_drift`]): its id and membership.
pub fn latest_own_membership(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
) -> Result<Option<(String, String)>> {
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT event_id, json FROM events
             WHERE room_id = ?1 AND type = 'm.room.member' AND state_key = ?2 AND sender = ?2
               AND rejected = 0
             ORDER BY nid DESC LIMIT 1",
        )?
        .query_row(params![room_id, user_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(id, json)| {
        let membership = membership_in(&json);
        (id, membership)
    }))
}

/// `content.membership` of a member event's JSON (empty if it has none).
fn membership_in(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            v.pointer("/content/membership")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// How many rejected events of a room are kept.
pub fn count_rejected(conn: &Connection, room_id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM events WHERE room_id = ?1 AND rejected = 1")?
        .query_row([room_id], |r| r.get(0))?)
}

/// Whether `a` may be in touch with `b`: they are in a room together (one of them may be
/// invited), or `b` holds an invite from `a` (to a room of another server).
pub fn share_a_room(conn: &Connection, a: &str, b: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id
             WHERE x.user_id = ?1 AND y.user_id = ?2
               AND x.membership IN ('join', 'invite') AND y.membership IN ('join', 'invite')
               AND (x.membership = 'join' OR y.membership = 'join')
             UNION ALL
             SELECT 1 FROM memberships m JOIN events e ON e.event_id = m.event_id
             WHERE m.user_id = ?2 AND m.membership = 'invite' AND e.sender = ?1
             LIMIT 1",
        )?
        .query_row(params![a, b], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The member event of the user's most recent join in any room the node holds (a remote
/// user's latest known profile is in it).
pub fn latest_join_event(conn: &Connection, user_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT event_id FROM memberships WHERE user_id = ?1 AND membership = 'join'
             ORDER BY stream DESC LIMIT 1",
        )?
        .query_row([user_id], |r| r.get(0))
        .optional()?)
}

/// Every room membership of a user (any state), not forgotten.
pub fn memberships_of_user(conn: &Connection, user_id: &str) -> Result<Vec<MembershipRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, user_id, membership, event_id, stream, forgotten FROM memberships
         WHERE user_id = ?1 AND forgotten = 0 ORDER BY stream",
    )?;
    let rows = stmt.query_map([user_id], membership_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Members of a room with the given membership (or all if `None`).
pub fn room_members(
    conn: &Connection,
    room_id: &str,
    membership: Option<&str>,
) -> Result<Vec<MembershipRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, user_id, membership, event_id, stream, forgotten FROM memberships
         WHERE room_id = ?1 AND (?2 IS NULL OR membership = ?2) ORDER BY user_id",
    )?;
    let rows = stmt.query_map(params![room_id, membership], membership_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a room as forgotten by a user.
pub fn forget_room(conn: &Connection, room_id: &str, user_id: &str) -> Result<()> {
    conn.execute(
        "UPDATE memberships SET forgotten = 1 WHERE room_id = ?1 AND user_id = ?2",
        params![room_id, user_id],
    )?;
    Ok(())
}

/// Users who share at least one joined room with `user_id` (including the user).
pub fn users_sharing_rooms(conn: &Connection, user_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT other.user_id FROM memberships me
         JOIN memberships other ON other.room_id = me.room_id AND other.membership = 'join'
         WHERE me.user_id = ?1 AND me.membership = 'join'",
    )?;
    let rows = stmt.query_map([user_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The room's timeline event whose `origin_server_ts` is closest to `ts` at or after it
/// (`forward`) or at or before it, among positions in `(floor, upto]`.
pub fn closest_to_ts(
    conn: &Connection,
    room_id: &str,
    ts: i64,
    forward: bool,
    floor: i64,
    upto: i64,
) -> Result<Option<(String, i64)>> {
    let sql = if forward {
        "SELECT event_id, origin_server_ts FROM events
         WHERE room_id = ?1 AND stream > ?3 AND stream <= ?4 AND rejected = 0 AND outlier = 0
           AND origin_server_ts >= ?2
         ORDER BY origin_server_ts, stream LIMIT 1"
    } else {
        "SELECT event_id, origin_server_ts FROM events
         WHERE room_id = ?1 AND stream > ?3 AND stream <= ?4 AND rejected = 0 AND outlier = 0
           AND origin_server_ts <= ?2
         ORDER BY origin_server_ts DESC, stream DESC LIMIT 1"
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![room_id, ts, floor, upto], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// A user's member events in a room up to a stream position, newest first:
/// `(stream, json)`.
pub fn member_events_upto(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    upto: i64,
) -> Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stream, json FROM events WHERE room_id = ?1 AND type = 'm.room.member' AND state_key = ?2
         AND stream <= ?3 AND rejected = 0 ORDER BY stream DESC",
    )?;
    let rows = stmt.query_map(params![room_id, user_id, upto], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The state group after the room's last timeline event at or before `upto`.
pub fn state_group_at(conn: &Connection, room_id: &str, upto: i64) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT state_after FROM events WHERE room_id = ?1 AND stream <= ?2 AND rejected = 0
             ORDER BY stream DESC LIMIT 1",
        )?
        .query_row(params![room_id, upto], |r| r.get(0))
        .optional()?
        .flatten())
}

/// A member event of a room this node does not take part in (an invite from another server,
/// or the leave that declined it).
#[derive(Debug)]
pub struct DetachedMember<'a> {
    /// Event id.
    pub event_id: &'a str,
    /// Room id.
    pub room_id: &'a str,
    /// The user it is about.
    pub user_id: &'a str,
    /// Its sender.
    pub sender: &'a str,
    /// Origin timestamp.
    pub origin_server_ts: i64,
    /// PDU JSON.
    pub json: &'a str,
}

/// Stores a [`DetachedMember`] outside the graph, at a stream position so that `/sync` shows
/// the change. Known events are left alone.
pub fn insert_detached_member_event(
    conn: &Connection,
    ev: &DetachedMember<'_>,
    stream: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO events (event_id, room_id, stream, type, state_key, sender,
            origin_server_ts, depth, json, outlier)
         VALUES (?1, ?2, ?3, 'm.room.member', ?4, ?5, ?6, 0, ?7, 1)",
    )?
    .execute(params![
        ev.event_id,
        ev.room_id,
        stream,
        ev.user_id,
        ev.sender,
        ev.origin_server_ts,
        ev.json
    ])?;
    Ok(())
}
