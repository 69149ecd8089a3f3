//! Reading a room's timeline: `/messages`, `/context`, `/event`, `/relations`, with history
//! visibility applied.
//!
//! Pagination tokens are stream positions: `t{p}` sits between the events at `p` and `p+1`.
//! Sync's `next_batch` (`s{p}_{typing}`) is accepted wherever a pagination token is.
//!
//! It stays one file (a little over 600 lines): history visibility and pagination answer one
//! question, which events of a room a user may read, and every reader here uses both.

use std::collections::BTreeSet;

use rusqlite::Connection;
use serde_json::{Value, json};

use super::{
    Rooms,
    format::{Viewer, client_event},
    relations::{client_event_bundled, client_events},
};
use crate::{
    error::{MatrixError, Result},
    filter::RoomEventFilter,
    storage::{events as ev_store, events::StoredEvent, now_ms, state as state_store},
};

/// Parses a pagination or sync token into a stream position.
pub fn parse_token(token: &str) -> Option<i64> {
    let rest = token
        .strip_prefix('t')
        .or_else(|| token.strip_prefix('s'))?;
    let pos = rest.split('_').next()?;
    pos.parse().ok().filter(|p: &i64| *p >= 0)
}

/// The pagination token for a position.
pub fn token(pos: i64) -> String {
    format!("t{}", pos.max(0))
}

/// Direction of pagination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards older events.
    Backward,
    /// Towards newer events.
    Forward,
}

/// The part of a room's stream a user may read: events with `floor < stream <= upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible {
    /// Events at or below this position are hidden.
    pub floor: i64,
    /// Events above this position are hidden.
    pub upto: i64,
}

/// What of a room a user may read, or `None` if nothing.
///
/// Members read up to now and someone who left reads up to their leave. How far back they
/// read follows the room's current `m.room.history_visibility`: `shared` (and
/// `world_readable`) shows all history, `invited` from the invite that led to their current
/// membership, `joined` from the join. Anyone may read a `world_readable` room.
pub fn visible_range(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    now_pos: i64,
) -> Result<Option<Visible>> {
    let visibility = history_visibility(conn, room_id)?;
    let membership = ev_store::membership(conn, room_id, user_id)?;
    let upto = match membership
        .as_ref()
        .map(|m| (m.membership.as_str(), m.stream))
    {
        Some(("join", _)) => Some(now_pos),
        // Someone who was only ever invited never saw the room.
        Some(("leave" | "ban", stream)) if was_ever_joined(conn, room_id, user_id, stream)? => {
            Some(stream)
        }
        _ => None,
    };
    let Some(upto) = upto else {
        return Ok((visibility == "world_readable").then_some(Visible {
            floor: 0,
            upto: now_pos,
        }));
    };
    let floor = match visibility.as_str() {
        "joined" | "invited" => {
            membership_run_start(conn, room_id, user_id, upto, visibility == "invited")?
        }
        _ => 0,
    };
    Ok(Some(Visible { floor, upto }))
}

/// The newest position a user may read in a room, or `None` if they may read nothing.
pub fn visible_upto(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    now_pos: i64,
) -> Result<Option<i64>> {
    Ok(visible_range(conn, room_id, user_id, now_pos)?.map(|v| v.upto))
}

fn history_visibility(conn: &Connection, room_id: &str) -> Result<String> {
    if let Some(id) =
        state_store::current_state_event(conn, room_id, "m.room.history_visibility", "")?
        && let Some(json) = ev_store::get_event_json(conn, &id)?
    {
        let v: Value = serde_json::from_str(&json)?;
        if let Some(h) = v
            .pointer("/content/history_visibility")
            .and_then(Value::as_str)
        {
            return Ok(h.to_owned());
        }
    }
    Ok("shared".to_owned())
}

/// The position just before the user's membership run (joins, optionally with the invite
/// before them) that ends at `upto`.
fn membership_run_start(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    upto: i64,
    with_invite: bool,
) -> Result<i64> {
    let rows = ev_store::member_events_upto(conn, room_id, user_id, upto)?;
    let mut start = upto;
    for (stream, json) in rows {
        let membership = serde_json::from_str::<Value>(&json)?
            .pointer("/content/membership")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let in_run = membership == "join" || (with_invite && membership == "invite");
        if !in_run && stream != upto {
            break;
        }
        if in_run {
            start = stream;
        }
    }
    Ok((start - 1).max(0))
}

fn was_ever_joined(conn: &Connection, room_id: &str, user_id: &str, upto: i64) -> Result<bool> {
    let events = ev_store::member_events_upto(conn, room_id, user_id, upto)?;
    // Stored JSON that does not read back is a fault, not a membership that never was.
    for (_, json) in &events {
        let event = serde_json::from_str::<Value>(json)?;
        if event.pointer("/content/membership").and_then(Value::as_str) == Some("join") {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn require_visible(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    now_pos: i64,
) -> Result<Visible> {
    visible_range(conn, room_id, user_id, now_pos)?
        .ok_or_else(|| MatrixError::forbidden("You are not allowed to view this room").into())
}

/// Where a page of a room's events starts and ends, which way it goes, and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Start after (forward) or at (backward) this stream position.
    pub from: i64,
    /// Stop at this position, if given.
    pub to: Option<i64>,
    /// Direction of travel.
    pub dir: Direction,
    /// Most events.
    pub limit: usize,
}

/// Pages through a room's events matching `filter`, starting after/before `from`.
/// Returns the events (in the order of travel) and the position to continue from, if any.
pub fn paginate(
    conn: &Connection,
    room_id: &str,
    page: Page,
    filter: &RoomEventFilter,
    range: Visible,
) -> Result<(Vec<StoredEvent>, Option<i64>)> {
    let Page {
        from,
        to,
        dir,
        limit,
    } = page;
    let upto = range.upto;
    if limit == 0 {
        return Ok((Vec::new(), None));
    }
    let mut out = Vec::new();
    let batch = limit.max(1) * 2;
    match dir {
        Direction::Backward => {
            let floor = to.unwrap_or(0).max(range.floor);
            let mut cursor = from.min(upto);
            while out.len() < limit && cursor > floor {
                let page =
                    ev_store::room_events_between(conn, room_id, floor, cursor, batch, true)?;
                if page.is_empty() {
                    cursor = floor;
                    break;
                }
                for ev in page.into_iter().rev() {
                    cursor = ev.stream.unwrap_or(0) - 1;
                    if filter.matches(&ev) {
                        out.push(ev);
                        if out.len() == limit {
                            break;
                        }
                    }
                }
            }
            let more = cursor > floor
                && ev_store::count_room_events_between(conn, room_id, floor, cursor)? > 0;
            Ok((out, more.then_some(cursor)))
        }
        Direction::Forward => {
            let ceiling = to.unwrap_or(upto).min(upto);
            let mut cursor = from.max(range.floor);
            while out.len() < limit && cursor < ceiling {
                let page =
                    ev_store::room_events_between(conn, room_id, cursor, ceiling, batch, false)?;
                if page.is_empty() {
                    cursor = ceiling;
                    break;
                }
                for ev in page {
                    cursor = ev.stream.unwrap_or(0);
                    if filter.matches(&ev) {
                        out.push(ev);
                        if out.len() == limit {
                            break;
                        }
                    }
                }
            }
            let more = cursor < ceiling;
            Ok((out, more.then_some(cursor)))
        }
    }
}

/// Member events for the senders of `events` as of `state_group` (for lazy loading).
pub fn lazy_members(
    conn: &Connection,
    room_id: &str,
    events: &[StoredEvent],
    extra: &[&str],
    viewer: Viewer<'_>,
    now: i64,
) -> Result<Vec<Value>> {
    let senders: BTreeSet<&str> = events
        .iter()
        .map(|e| e.sender.as_str())
        .chain(extra.iter().copied())
        .collect();
    let mut out = Vec::new();
    for sender in senders {
        if let Some(id) = state_store::current_state_event(conn, room_id, "m.room.member", sender)?
            && let Some(ev) = ev_store::get_event(conn, &id)?
        {
            out.push(client_event(conn, &ev, Some(viewer), now)?);
        }
    }
    Ok(out)
}

/// Parameters of `/messages`.
#[derive(Debug, Clone)]
pub struct MessagesQuery {
    /// Start token.
    pub from: Option<String>,
    /// End token.
    pub to: Option<String>,
    /// Direction.
    pub dir: Direction,
    /// Page size.
    pub limit: usize,
    /// Filter.
    pub filter: RoomEventFilter,
}

pub(crate) fn position(token: Option<&str>, name: &str) -> Result<Option<i64>> {
    match token {
        None => Ok(None),
        Some(t) => parse_token(t)
            .map(Some)
            .ok_or_else(|| MatrixError::invalid_param(format!("Invalid {name} token")).into()),
    }
}

impl Rooms {
    /// `GET /rooms/{roomId}/messages`.
    pub async fn messages(
        &self,
        user: &str,
        device: &str,
        room_id: &str,
        q: MessagesQuery,
    ) -> Result<Value> {
        let (user, device, room_id) = (user.to_owned(), device.to_owned(), room_id.to_owned());
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                let upto = range.upto;
                let from = position(q.from.as_deref(), "from")?;
                let to = position(q.to.as_deref(), "to")?;
                let from = from.unwrap_or(match q.dir {
                    Direction::Backward => upto,
                    Direction::Forward => 0,
                });
                let (events, next) = paginate(
                    conn,
                    &room_id,
                    Page {
                        from,
                        to,
                        dir: q.dir,
                        limit: q.limit,
                    },
                    &q.filter,
                    range,
                )?;
                let viewer = Viewer {
                    user_id: &user,
                    device_id: Some(&device),
                };
                let now = now_ms();
                let chunk = client_events(conn, &room_id, &events, viewer, Some(range), now)?;
                let mut body = json!({ "chunk": chunk, "start": token(from) });
                if let Some(n) = next {
                    body["end"] = json!(token(n));
                }
                if q.filter.lazy_load_members {
                    body["state"] = json!(lazy_members(conn, &room_id, &events, &[], viewer, now)?);
                }
                Ok(body)
            })
            .await
    }

    /// `GET /rooms/{roomId}/event/{eventId}`.
    pub async fn event(
        &self,
        user: &str,
        device: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<Value> {
        let (user, device, room_id, event_id) = (
            user.to_owned(),
            device.to_owned(),
            room_id.to_owned(),
            event_id.to_owned(),
        );
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let not_found = || MatrixError::not_found("Event not found");
                let ev = ev_store::get_event(conn, &event_id)?.ok_or_else(not_found)?;
                if ev.room_id != room_id || ev.rejected {
                    return Err(not_found().into());
                }
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                let upto = range.upto;
                if ev.stream.is_none_or(|s| s > upto || s <= range.floor) {
                    return Err(not_found().into());
                }
                let viewer = Viewer {
                    user_id: &user,
                    device_id: Some(&device),
                };
                client_event_bundled(conn, &ev, viewer, range, now_ms())
            })
            .await
    }

    /// `GET /v1/rooms/{roomId}/timestamp_to_event`: the event closest to `ts` (milliseconds)
    /// in direction `dir` among those the user may see, as `(event_id, origin_server_ts)`.
    pub async fn timestamp_to_event(
        &self,
        user: &str,
        room_id: &str,
        ts: i64,
        dir: Direction,
    ) -> Result<(String, i64)> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                let forward = matches!(dir, Direction::Forward);
                ev_store::closest_to_ts(conn, &room_id, ts, forward, range.floor, range.upto)?
                    .ok_or_else(|| {
                        MatrixError::not_found("No event found at or around that time").into()
                    })
            })
            .await
    }

    /// `GET /rooms/{roomId}/context/{eventId}`.
    pub async fn context(
        &self,
        user: &str,
        device: &str,
        room_id: &str,
        event_id: &str,
        limit: usize,
        filter: RoomEventFilter,
    ) -> Result<Value> {
        let (user, device, room_id, event_id) = (
            user.to_owned(),
            device.to_owned(),
            room_id.to_owned(),
            event_id.to_owned(),
        );
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let not_found = || MatrixError::not_found("Event not found");
                let ev = ev_store::get_event(conn, &event_id)?.ok_or_else(not_found)?;
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                let upto = range.upto;
                let Some(pos) = ev
                    .stream
                    .filter(|p| *p <= upto && *p > range.floor && ev.room_id == room_id)
                else {
                    return Err(not_found().into());
                };
                let before_n = limit / 2;
                let after_n = limit - before_n;
                let (before, _) = paginate(
                    conn,
                    &room_id,
                    Page {
                        from: pos - 1,
                        to: None,
                        dir: Direction::Backward,
                        limit: before_n,
                    },
                    &filter,
                    range,
                )?;
                let (after, _) = paginate(
                    conn,
                    &room_id,
                    Page {
                        from: pos,
                        to: None,
                        dir: Direction::Forward,
                        limit: after_n,
                    },
                    &filter,
                    range,
                )?;
                let viewer = Viewer {
                    user_id: &user,
                    device_id: Some(&device),
                };
                let now = now_ms();
                let fmt = |evs: &[StoredEvent]| {
                    client_events(conn, &room_id, evs, viewer, Some(range), now)
                };
                let start = before
                    .last()
                    .and_then(|e| e.stream)
                    .map_or(pos - 1, |s| s - 1);
                let end = after.last().and_then(|e| e.stream).unwrap_or(pos);
                let mut all: Vec<StoredEvent> = before.clone();
                all.push(ev.clone());
                all.extend(after.iter().cloned());
                let state = if filter.lazy_load_members {
                    lazy_members(conn, &room_id, &all, &[], viewer, now)?
                } else {
                    // The state at the last event returned.
                    let last = after.last().unwrap_or(&ev);
                    let state = match last.state_after {
                        Some(g) => state_store::load_state_group(conn, g)?,
                        None => state_store::current_state(conn, &room_id)?,
                    };
                    let mut out = Vec::new();
                    for id in state.values() {
                        if let Some(e) = ev_store::get_event(conn, id)? {
                            out.push(client_event(conn, &e, Some(viewer), now)?);
                        }
                    }
                    out
                };
                Ok(json!({
                    "event": client_event_bundled(conn, &ev, viewer, range, now)?,
                    "events_before": fmt(&before)?,
                    "events_after": fmt(&after)?,
                    "start": token(start),
                    "end": token(end),
                    "state": state,
                }))
            })
            .await
    }

    /// The current state of a room as client events (`GET /rooms/{roomId}/state`).
    pub async fn full_state(&self, user: &str, room_id: &str) -> Result<Vec<Value>> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                let upto = range.upto;
                let state = state_at(conn, &room_id, upto, now_pos)?;
                let now = now_ms();
                let mut out = Vec::new();
                for id in state.values() {
                    if let Some(ev) = ev_store::get_event(conn, id)? {
                        out.push(client_event(conn, &ev, None, now)?);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// One state event's content as a user may see it (`GET /rooms/{roomId}/state/{type}/{key}`).
    pub async fn state_event_for(
        &self,
        user: &str,
        room_id: &str,
        ty: &str,
        key: &str,
    ) -> Result<Value> {
        let (user, room_id, ty, key) = (
            user.to_owned(),
            room_id.to_owned(),
            ty.to_owned(),
            key.to_owned(),
        );
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                let upto = range.upto;
                let state = state_at(conn, &room_id, upto, now_pos)?;
                let not_found = || MatrixError::not_found("State event not found");
                let id = state.get(&(ty, key)).ok_or_else(not_found)?;
                let json = ev_store::get_event_json(conn, id)?.ok_or_else(not_found)?;
                let v: Value = serde_json::from_str(&json)?;
                Ok(v.get("content").cloned().unwrap_or_else(|| json!({})))
            })
            .await
    }

    /// Members of a room as client events (`GET /rooms/{roomId}/members`).
    pub async fn members(
        &self,
        user: &str,
        room_id: &str,
        membership: Option<String>,
        not_membership: Option<String>,
    ) -> Result<Vec<Value>> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                let upto = range.upto;
                let state = state_at(conn, &room_id, upto, now_pos)?;
                let now = now_ms();
                let mut out = Vec::new();
                for ((ty, _), id) in &state {
                    if ty != "m.room.member" {
                        continue;
                    }
                    let Some(ev) = ev_store::get_event(conn, id)? else {
                        continue;
                    };
                    let v = client_event(conn, &ev, None, now)?;
                    let m = v
                        .pointer("/content/membership")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if membership.as_deref().is_some_and(|want| want != m)
                        || not_membership.as_deref().is_some_and(|not| not == m)
                    {
                        continue;
                    }
                    out.push(v);
                }
                Ok(out)
            })
            .await
    }
}

/// The room state as of position `upto` (the current state when `upto` is now).
pub fn state_at(
    conn: &Connection,
    room_id: &str,
    upto: i64,
    now_pos: i64,
) -> Result<state_store::StateMap> {
    if upto >= now_pos {
        return state_store::current_state(conn, room_id);
    }
    match ev_store::state_group_at(conn, room_id, upto)? {
        Some(g) => state_store::load_state_group(conn, g),
        None => Ok(Default::default()),
    }
}
