//! Room history for other servers: the state at an event (`/state`, `/state_ids`) and older
//! events (`/backfill`).
//!
//! Only servers that have (or had) a member in the room are answered. Each event is shown
//! as `m.room.history_visibility` allows at that event: `shared` and `world_readable` history
//! to any such server, `invited` and `joined` history only if one of the server's users was
//! invited or joined at the time; events a server may not see go out redacted, so the
//! room's graph stays whole.

use std::collections::{BinaryHeap, HashSet};

use axum::{Json, extract::State, http::Uri};
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Signed;
use crate::e2ee::remote::server_of;
use crate::{
    error::{Error, MatrixError, Result},
    http::{AppState, Path, Query, query_values},
    rooms::graph::{self, version_rules},
    storage::{
        events::{self as ev_store, StoredEvent},
        now_ms,
        state::{self as state_store, StateMap},
    },
};

/// Most events one backfill answers.
const MAX_BACKFILL: usize = 100;

/// Whether a user of `server` has any membership in the room, now or in the past.
fn server_ever_in_room(conn: &Connection, room_id: &str, server: &str) -> Result<bool> {
    Ok(ev_store::room_members(conn, room_id, None)?
        .iter()
        .any(|m| server_of(&m.user_id) == Some(server)))
}

fn forbidden() -> Error {
    MatrixError::forbidden("Your server has no member in this room").into()
}

/// The room state just before an event (its `state_before` group).
fn state_before(conn: &Connection, ev: &StoredEvent) -> Result<StateMap> {
    match ev.state_before.or(ev.state_after) {
        Some(group) => state_store::load_state_group(conn, group),
        None => Ok(StateMap::new()),
    }
}

/// Whether `server` may see `ev`, by the history visibility in force at it.
fn visible_to_server(conn: &Connection, ev: &StoredEvent, server: &str) -> Result<bool> {
    let Some(group) = ev.state_before.or(ev.state_after) else {
        return Ok(false);
    };
    let content = |id: Option<String>| -> Result<Value> {
        Ok(match id {
            Some(id) => ev_store::get_event_json(conn, &id)?
                .map(|j| serde_json::from_str::<Value>(&j))
                .transpose()?
                .map(|v| v["content"].clone())
                .unwrap_or(Value::Null),
            None => Value::Null,
        })
    };
    let visibility = content(state_store::state_group_entry(
        conn,
        group,
        "m.room.history_visibility",
        "",
    )?)?;
    let visibility = visibility["history_visibility"]
        .as_str()
        .unwrap_or("shared")
        .to_owned();
    if matches!(visibility.as_str(), "shared" | "world_readable") {
        return Ok(true);
    }
    let with_invites = visibility == "invited";
    for ((ty, key), id) in state_store::load_state_group(conn, group)? {
        if ty != "m.room.member" || server_of(&key) != Some(server) {
            continue;
        }
        let membership = content(Some(id))?;
        match membership["membership"].as_str() {
            Some("join") => return Ok(true),
            Some("invite") if with_invites => return Ok(true),
            _ => {}
        }
    }
    Ok(false)
}

/// The event as `server` may see it: whole, or redacted.
pub(super) fn pdu_for_server(conn: &Connection, ev: &StoredEvent, server: &str) -> Result<Value> {
    let json: Value = serde_json::from_str(&ev.json)?;
    if visible_to_server(conn, ev, server)? {
        return Ok(json);
    }
    let version = ev_store::get_room(conn, &ev.room_id)?
        .map(|r| r.room_version)
        .ok_or_else(|| MatrixError::not_found("Unknown room"))?;
    let (_, rules) = version_rules(&version)?;
    let obj: ruma::CanonicalJsonObject = serde_json::from_value(json)?;
    let redacted = ruma::canonical_json::redact(obj, &rules.redaction, None)
        .map_err(|e| Error::Event(e.to_string()))?;
    Ok(serde_json::to_value(redacted)?)
}

/// The state before `event_id` and its auth chain, as ids, for `origin`.
fn state_ids_at(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
    origin: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    if !server_ever_in_room(conn, room_id, origin)? {
        return Err(forbidden());
    }
    let ev = ev_store::get_event(conn, event_id)?
        .filter(|e| e.room_id == room_id)
        .ok_or_else(|| MatrixError::not_found("Unknown event in this room"))?;
    if !visible_to_server(conn, &ev, origin)? {
        return Err(MatrixError::forbidden("Your server may not see this event").into());
    }
    let state: Vec<String> = state_before(conn, &ev)?.into_values().collect();
    let chain = graph::auth_chain(conn, state.iter().cloned())?;
    Ok((state, chain))
}

fn pdus(conn: &Connection, ids: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(json) = ev_store::get_event_json(conn, id)? {
            out.push(serde_json::from_str(&json)?);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
pub(super) struct StateQuery {
    event_id: String,
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`.
pub(super) async fn state_ids(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    Query(q): Query<StateQuery>,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let origin = signed.origin;
    let (pdu_ids, auth_chain_ids) = state
        .db
        .read(move |conn| state_ids_at(conn, &room_id, &q.event_id, &origin))
        .await?;
    Ok(Json(
        json!({ "pdu_ids": pdu_ids, "auth_chain_ids": auth_chain_ids }),
    ))
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`.
pub(super) async fn room_state(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    Query(q): Query<StateQuery>,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let origin = signed.origin;
    let body = state
        .db
        .read(move |conn| {
            let (state, chain) = state_ids_at(conn, &room_id, &q.event_id, &origin)?;
            Ok(json!({ "pdus": pdus(conn, &state)?, "auth_chain": pdus(conn, &chain)? }))
        })
        .await?;
    Ok(Json(body))
}

/// Reads `v` (repeatable) and `limit` from a backfill query string.
fn backfill_params(uri: &Uri) -> std::result::Result<(Vec<String>, usize), MatrixError> {
    let from = query_values(uri.query(), "v");
    let limit = match query_values(uri.query(), "limit").first() {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| MatrixError::invalid_param("limit must be a number"))?,
        ),
        None => None,
    };
    if from.is_empty() {
        return Err(MatrixError::missing_param("v is required"));
    }
    let limit = limit.ok_or_else(|| MatrixError::missing_param("limit is required"))?;
    Ok((from, limit.min(MAX_BACKFILL)))
}

/// Walks back from `from` (included) through `prev_events`, newest (deepest) first, up to
/// `limit` events of the room, each as `origin` may see it.
fn backfill_from(
    conn: &Connection,
    room_id: &str,
    from: Vec<String>,
    limit: usize,
    origin: &str,
) -> Result<Vec<Value>> {
    if !server_ever_in_room(conn, room_id, origin)? {
        return Err(forbidden());
    }
    let mut queue: BinaryHeap<(i64, String)> = BinaryHeap::new();
    let mut seen = HashSet::new();
    for id in from {
        if let Some(depth) = ev_store::event_depth(conn, &id)?
            && seen.insert(id.clone())
        {
            queue.push((depth, id));
        }
    }
    let mut out = Vec::new();
    while let Some((_, id)) = queue.pop() {
        if out.len() >= limit {
            break;
        }
        let Some(ev) = ev_store::get_event(conn, &id)?.filter(|e| e.room_id == room_id) else {
            continue;
        };
        if let Some(pdu) = graph::load_pdu(conn, &id)? {
            for prev in &pdu.data.prev_events {
                let prev = prev.to_string();
                if let Some(depth) = ev_store::event_depth(conn, &prev)?
                    && seen.insert(prev.clone())
                {
                    queue.push((depth, prev));
                }
            }
        }
        out.push(pdu_for_server(conn, &ev, origin)?);
    }
    Ok(out)
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=`.
pub(super) async fn backfill(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    uri: Uri,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let (from, limit) = backfill_params(&uri)?;
    let origin = signed.origin;
    let local = state.identity.server_name().to_string();
    let pdus = state
        .db
        .read(move |conn| backfill_from(conn, &room_id, from, limit, &origin))
        .await?;
    Ok(Json(json!({
        "origin": local,
        "origin_server_ts": now_ms(),
        "pdus": pdus,
    })))
}
