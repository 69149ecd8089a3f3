//! Room state: delta-encoded state groups and each room's resolved current state.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// A state map: `(type, state_key)` to event id.
pub type StateMap = BTreeMap<(String, String), String>;

/// A delta chain longer than this is cut by writing a full copy.
const MAX_CHAIN: i64 = 64;

/// Stores a new state group equal to `prev` plus `changes`; returns its id.
pub fn create_state_group(
    conn: &Connection,
    room_id: &str,
    prev: Option<i64>,
    changes: &StateMap,
) -> Result<i64> {
    let prev_len = match prev {
        Some(p) => conn
            .prepare_cached("SELECT chain_len FROM state_groups WHERE id = ?1")?
            .query_row([p], |r| r.get::<_, i64>(0))
            .optional()?,
        None => None,
    };
    let (prev, entries, chain_len) = match (prev, prev_len) {
        (Some(p), Some(len)) if len < MAX_CHAIN => (Some(p), changes.clone(), len + 1),
        (Some(p), Some(_)) => {
            let mut full = load_state_group(conn, p)?;
            full.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
            (None, full, 0)
        }
        _ => (None, changes.clone(), 0),
    };
    conn.prepare_cached(
        "INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![room_id, prev, chain_len])?;
    let id = conn.last_insert_rowid();
    let mut ins = conn.prepare_cached(
        "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for ((ty, key), event_id) in &entries {
        ins.execute(params![id, ty, key, event_id])?;
    }
    Ok(id)
}

/// Loads the full state of a group by walking its delta chain.
pub fn load_state_group(conn: &Connection, group: i64) -> Result<StateMap> {
    let mut chain = Vec::new();
    let mut next = Some(group);
    while let Some(g) = next {
        chain.push(g);
        next = conn
            .prepare_cached("SELECT prev_group FROM state_groups WHERE id = ?1")?
            .query_row([g], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten();
    }
    let mut state = StateMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = ?1",
    )?;
    // Oldest first so that newer entries win.
    for g in chain.iter().rev() {
        let rows = stmt.query_map([g], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        for row in rows {
            let (k, v) = row?;
            state.insert(k, v);
        }
    }
    Ok(state)
}

/// One entry of a state group, resolved through its chain.
pub fn state_group_entry(
    conn: &Connection,
    group: i64,
    ty: &str,
    key: &str,
) -> Result<Option<String>> {
    let mut next = Some(group);
    while let Some(g) = next {
        let found: Option<String> = conn
            .prepare_cached(
                "SELECT event_id FROM state_group_entries WHERE group_id = ?1 AND type = ?2 AND state_key = ?3",
            )?
            .query_row(params![g, ty, key], |r| r.get(0))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
        next = conn
            .prepare_cached("SELECT prev_group FROM state_groups WHERE id = ?1")?
            .query_row([g], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten();
    }
    Ok(None)
}

/// The current state of a room.
pub fn current_state(conn: &Connection, room_id: &str) -> Result<StateMap> {
    let mut stmt = conn
        .prepare_cached("SELECT type, state_key, event_id FROM current_state WHERE room_id = ?1")?;
    let rows = stmt.query_map([room_id], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The current state events of one type in a room: `(state_key, event_id)`.
pub fn current_state_of_type(
    conn: &Connection,
    room_id: &str,
    ty: &str,
) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT state_key, event_id FROM current_state WHERE room_id = ?1 AND type = ?2",
    )?;
    let rows = stmt.query_map(params![room_id, ty], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One current state event of a room.
pub fn current_state_event(
    conn: &Connection,
    room_id: &str,
    ty: &str,
    key: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT event_id FROM current_state WHERE room_id = ?1 AND type = ?2 AND state_key = ?3",
        )?
        .query_row(params![room_id, ty, key], |r| r.get(0))
        .optional()?)
}

/// Sets one entry of a room's current state.
pub fn set_current_state(
    conn: &Connection,
    room_id: &str,
    ty: &str,
    key: &str,
    event_id: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
    )?
    .execute(params![room_id, ty, key, event_id])?;
    Ok(())
}
