//! Server-side search (`POST /search`, category `room_events`) over the full-text index.
//!
//! Results come only from rooms the user is or was in and only from the part of each room's
//! history they may read. Pagination is by offset into the ordered results: `next_batch` is
//! the offset of the next page.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Rooms,
    format::{Viewer, client_event},
    timeline::{Direction, Page, Visible, paginate, state_at, token, visible_range},
};
use crate::{
    error::{MatrixError, Result},
    filter::RoomEventFilter,
    storage::{accounts, events as ev_store, now_ms, search as store},
};

/// Results per page when the filter gives no limit.
const DEFAULT_LIMIT: usize = 10;
/// Most results per page.
const MAX_LIMIT: usize = 100;
/// Context events on each side when `event_context` gives no limit.
const DEFAULT_CONTEXT: usize = 5;
/// Most context events on each side.
const MAX_CONTEXT: usize = 50;

/// The `room_events` criteria of a search request.
#[derive(Debug, Clone, Deserialize)]
pub struct RoomEventsCriteria {
    /// The words to look for.
    pub search_term: String,
    /// Which keys to search: `content.body`, `content.name`, `content.topic`.
    pub keys: Option<Vec<String>>,
    /// Rooms, senders, types and page size.
    #[serde(default)]
    pub filter: RoomEventFilter,
    /// `rank` (default) or `recent`.
    pub order_by: Option<String>,
    /// Events to return around each result.
    pub event_context: Option<EventContext>,
    /// Also return the current state of the rooms of the results.
    #[serde(default)]
    pub include_state: bool,
    /// Group results by room or sender.
    pub groupings: Option<Groupings>,
}

/// `event_context` of a search request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventContext {
    /// Events before each result.
    pub before_limit: Option<u64>,
    /// Events after each result.
    pub after_limit: Option<u64>,
    /// Add the senders' profiles.
    #[serde(default)]
    pub include_profile: bool,
}

/// `groupings` of a search request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Groupings {
    /// The groupings wanted.
    #[serde(default)]
    pub group_by: Vec<GroupBy>,
}

/// One grouping.
#[derive(Debug, Clone, Deserialize)]
pub struct GroupBy {
    /// `room_id` or `sender`.
    pub key: String,
}

/// The FTS5 query for a search term: every word, as a prefix, all required. `None` when the
/// term has no word.
fn fts_query(term: &str) -> Option<(String, Vec<String>)> {
    let words: Vec<String> = term
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        return None;
    }
    let query = words
        .iter()
        .map(|w| format!("\"{w}\"*"))
        .collect::<Vec<_>>()
        .join(" ");
    Some((query, words))
}

impl Rooms {
    /// Searches room events for `user`; `next_batch` is the token of the page to return.
    pub async fn search_room_events(
        &self,
        user: &str,
        device: &str,
        criteria: RoomEventsCriteria,
        next_batch: Option<String>,
    ) -> Result<Value> {
        let keys: Vec<&'static str> = match &criteria.keys {
            None => vec!["content.body", "content.name", "content.topic"],
            Some(keys) if keys.is_empty() => {
                return Err(MatrixError::invalid_param("keys must not be empty").into());
            }
            Some(keys) => keys
                .iter()
                .map(|k| match k.as_str() {
                    "content.body" => Ok("content.body"),
                    "content.name" => Ok("content.name"),
                    "content.topic" => Ok("content.topic"),
                    _ => Err(MatrixError::invalid_param(format!(
                        "Unknown search key {k}"
                    ))),
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        let recent = match criteria.order_by.as_deref() {
            None | Some("rank") => false,
            Some("recent") => true,
            Some(_) => {
                return Err(MatrixError::invalid_param("order_by must be rank or recent").into());
            }
        };
        for g in criteria.groupings.iter().flat_map(|g| &g.group_by) {
            if g.key != "room_id" && g.key != "sender" {
                return Err(
                    MatrixError::invalid_param("groupings may be by room_id or sender").into(),
                );
            }
        }
        let offset: usize = match next_batch.as_deref() {
            None => 0,
            Some(t) => t
                .parse()
                .map_err(|_| MatrixError::invalid_param("Invalid next_batch token"))?,
        };
        let limit = criteria
            .filter
            .limit
            .map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
        let Some((query, highlights)) = fts_query(&criteria.search_term) else {
            return Ok(json!({ "results": [], "count": 0, "highlights": [] }));
        };
        let (user, device) = (user.to_owned(), device.to_owned());
        // Messages still waiting for their batch join the index first.
        self.db.write(|txn| store::catch_up(txn)).await?;
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let hits = store::search(conn, &query, &keys)?;
                let mut ranges: BTreeMap<String, Option<Visible>> = BTreeMap::new();
                let mut found = Vec::new();
                for hit in hits {
                    if !criteria.filter.allows_room(&hit.room_id) {
                        continue;
                    }
                    let range = match ranges.get(&hit.room_id) {
                        Some(r) => *r,
                        None => {
                            let r = visible_range(conn, &hit.room_id, &user, now_pos)?;
                            // Only rooms the user has been in, not every world-readable room.
                            let member = ev_store::membership(conn, &hit.room_id, &user)?
                                .is_some_and(|m| m.membership != "invite");
                            let r = r.filter(|_| member);
                            ranges.insert(hit.room_id.clone(), r);
                            r
                        }
                    };
                    let Some(range) = range else { continue };
                    if hit.stream <= range.floor || hit.stream > range.upto {
                        continue;
                    }
                    let Some(ev) = ev_store::get_event(conn, &hit.event_id)? else {
                        continue;
                    };
                    if ev.redacted_by.is_some() || !criteria.filter.matches(&ev) {
                        continue;
                    }
                    found.push((hit, ev, range));
                }
                if recent {
                    found.sort_by_key(|f| std::cmp::Reverse(f.0.stream));
                }
                let count = found.len();
                let page: Vec<_> = found.iter().skip(offset).take(limit).collect();
                let now = now_ms();
                let viewer = Viewer {
                    user_id: &user,
                    device_id: Some(&device),
                };
                let mut results = Vec::new();
                let mut groups: BTreeMap<&str, BTreeMap<String, Vec<String>>> = BTreeMap::new();
                for (hit, ev, range) in &page {
                    let mut result = json!({
                        "rank": hit.rank,
                        "result": client_event(conn, ev, Some(viewer), now)?,
                    });
                    if let Some(ctx) = &criteria.event_context {
                        result["context"] = context(conn, ev, *range, ctx, viewer, now)?;
                    }
                    results.push(result);
                    for g in criteria.groupings.iter().flat_map(|g| &g.group_by) {
                        let id = if g.key == "room_id" {
                            &ev.room_id
                        } else {
                            &ev.sender
                        };
                        let key = if g.key == "room_id" {
                            "room_id"
                        } else {
                            "sender"
                        };
                        groups
                            .entry(key)
                            .or_default()
                            .entry(id.clone())
                            .or_default()
                            .push(ev.event_id.clone());
                    }
                }
                let mut body = json!({
                    "results": results,
                    "count": count,
                    "highlights": highlights,
                });
                if offset + page.len() < count {
                    body["next_batch"] = json!((offset + page.len()).to_string());
                }
                if !groups.is_empty() {
                    let mut out = Map::new();
                    for (key, by_id) in groups {
                        let mut inner = Map::new();
                        for (order, (id, events)) in by_id.into_iter().enumerate() {
                            inner.insert(id, json!({ "results": events, "order": order }));
                        }
                        out.insert(key.to_owned(), Value::Object(inner));
                    }
                    body["groups"] = Value::Object(out);
                }
                if criteria.include_state {
                    let mut state = Map::new();
                    for (hit, _, range) in &page {
                        if state.contains_key(&hit.room_id) {
                            continue;
                        }
                        let mut events = Vec::new();
                        for id in state_at(conn, &hit.room_id, range.upto, now_pos)?.values() {
                            if let Some(ev) = ev_store::get_event(conn, id)? {
                                events.push(client_event(conn, &ev, None, now)?);
                            }
                        }
                        state.insert(hit.room_id.clone(), Value::Array(events));
                    }
                    body["state"] = Value::Object(state);
                }
                Ok(body)
            })
            .await
    }
}

/// The events around one result.
fn context(
    conn: &Connection,
    ev: &ev_store::StoredEvent,
    range: Visible,
    ctx: &EventContext,
    viewer: Viewer<'_>,
    now: i64,
) -> Result<Value> {
    let pos = ev.stream.unwrap_or(0);
    let limit = |l: Option<u64>| l.map_or(DEFAULT_CONTEXT, |l| (l as usize).min(MAX_CONTEXT));
    let all = RoomEventFilter::default();
    let (before, _) = paginate(
        conn,
        &ev.room_id,
        Page {
            from: pos - 1,
            to: None,
            dir: Direction::Backward,
            limit: limit(ctx.before_limit),
        },
        &all,
        range,
    )?;
    let (after, _) = paginate(
        conn,
        &ev.room_id,
        Page {
            from: pos,
            to: None,
            dir: Direction::Forward,
            limit: limit(ctx.after_limit),
        },
        &all,
        range,
    )?;
    let start = before.last().and_then(|e| e.stream).unwrap_or(pos);
    let end = after.last().and_then(|e| e.stream).unwrap_or(pos);
    let format = |evs: &[ev_store::StoredEvent]| -> Result<Vec<Value>> {
        evs.iter()
            .map(|e| client_event(conn, e, Some(viewer), now))
            .collect()
    };
    let mut out = json!({
        "start": token(start - 1),
        "end": token(end),
        "events_before": format(&before)?,
        "events_after": format(&after)?,
    });
    if ctx.include_profile {
        let mut profiles = Map::new();
        for e in before.iter().chain(after.iter()).chain(std::iter::once(ev)) {
            if profiles.contains_key(&e.sender) {
                continue;
            }
            if let Some((name, avatar)) = accounts::get_profile(conn, &e.sender)? {
                profiles.insert(
                    e.sender.clone(),
                    json!({ "displayname": name, "avatar_url": avatar }),
                );
            }
        }
        out["profile_info"] = Value::Object(profiles);
    }
    Ok(out)
}
