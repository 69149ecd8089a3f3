//! Relations between events as clients see them: bundled aggregations
//! (`unsigned.m.relations`) on every event served, `/relations` and `/threads`.
//!
//! Aggregations follow the spec (v1.7 and later):
//! - `m.replace`: the most recent valid edit (same sender and type as the original, neither a
//!   state event, the original not itself an edit, `m.new_content` present unless encrypted),
//!   by `origin_server_ts` then `event_id`, bundled whole. A redacted original gets none.
//! - `m.thread`: `latest_event` (with its own bundled edit), `count` and
//!   `current_user_participated`.
//! - `m.reference`: `chunk` of `{event_id}`.
//!
//! Only children the reader may see count; a redacted child has lost its relation. State
//! events get no aggregations. A page of events costs a handful of statements, whatever its
//! length.

use std::collections::HashMap;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{
    Rooms,
    format::{Viewer, client_event},
    timeline::{Direction, Visible, position, require_visible, token},
};
use crate::{
    error::{ErrorCode, MatrixError, Result},
    storage::{
        events as ev_store,
        events::StoredEvent,
        now_ms,
        relations::{self as rel_store, RelatedQuery},
    },
};

/// How far `/relations?recurse=true` follows relations of relations.
pub const MAX_RECURSION_DEPTH: u32 = 3;

/// Formats a page of a room's events for `viewer`, each with its bundled aggregations as
/// far as `range` lets the viewer see. Without a range nothing is aggregated.
pub fn client_events(
    conn: &Connection,
    room_id: &str,
    events: &[StoredEvent],
    viewer: Viewer<'_>,
    range: Option<Visible>,
    now: i64,
) -> Result<Vec<Value>> {
    let mut bundles = match range {
        Some(range) => aggregations(conn, room_id, events, viewer, range, now, true)?,
        None => HashMap::new(),
    };
    events
        .iter()
        .map(|ev| {
            let mut v = client_event(conn, ev, Some(viewer), now)?;
            if let Some(bundle) = bundles.remove(&ev.event_id) {
                v["unsigned"]["m.relations"] = Value::Object(bundle);
            }
            Ok(v)
        })
        .collect()
}

/// One event for `viewer`, with its bundled aggregations.
pub fn client_event_bundled(
    conn: &Connection,
    ev: &StoredEvent,
    viewer: Viewer<'_>,
    range: Visible,
    now: i64,
) -> Result<Value> {
    let mut out = client_events(
        conn,
        &ev.room_id,
        std::slice::from_ref(ev),
        viewer,
        Some(range),
        now,
    )?;
    Ok(out.pop().unwrap_or(Value::Null))
}

/// The `rel_type` an event's own content declares, if any.
fn own_rel_type(ev: &StoredEvent) -> Option<String> {
    let v: Value = serde_json::from_str(&ev.json).ok()?;
    v.pointer("/content/m.relates_to/rel_type")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether `edit` is a valid replacement of `original` (the relation itself is known).
fn valid_edit(original: &StoredEvent, edit: &StoredEvent) -> bool {
    if edit.sender != original.sender
        || edit.event_type != original.event_type
        || edit.state_key.is_some()
        || original.state_key.is_some()
        || edit.redacted_by.is_some()
    {
        return false;
    }
    // An encrypted edit carries `m.new_content` inside its ciphertext.
    edit.event_type == "m.room.encrypted"
        || serde_json::from_str::<Value>(&edit.json)
            .ok()
            .and_then(|v| v.pointer("/content/m.new_content").map(Value::is_object))
            .unwrap_or(false)
}

/// Whether edit `a` is more recent than edit `b`: later `origin_server_ts`, ties broken by
/// the lexicographically larger event id.
fn more_recent(a: &StoredEvent, b: &StoredEvent) -> bool {
    (a.origin_server_ts, &a.event_id) > (b.origin_server_ts, &b.event_id)
}

/// The bundled aggregations of each event of a page that has any, by event id.
fn aggregations(
    conn: &Connection,
    room_id: &str,
    events: &[StoredEvent],
    viewer: Viewer<'_>,
    range: Visible,
    now: i64,
    with_threads: bool,
) -> Result<HashMap<String, Map<String, Value>>> {
    let parents: HashMap<&str, &StoredEvent> = events
        .iter()
        .filter(|e| e.state_key.is_none() && !e.rejected && e.room_id == room_id)
        .map(|e| (e.event_id.as_str(), e))
        .collect();
    let mut out: HashMap<String, Map<String, Value>> = HashMap::new();
    if parents.is_empty() {
        return Ok(out);
    }
    let ids: Vec<&str> = parents.keys().copied().collect();
    let (after, upto) = (range.floor, range.upto);

    // m.replace: the originals that may be edited at all.
    let editable: Vec<&str> = parents
        .values()
        .filter(|e| e.redacted_by.is_none() && own_rel_type(e).as_deref() != Some("m.replace"))
        .map(|e| e.event_id.as_str())
        .collect();
    let mut latest_edit: HashMap<String, StoredEvent> = HashMap::new();
    for (parent, edit) in rel_store::children(conn, room_id, &editable, "m.replace", after, upto)? {
        let Some(original) = parents.get(parent.as_str()) else {
            continue;
        };
        if !valid_edit(original, &edit) {
            continue;
        }
        if latest_edit
            .get(&parent)
            .is_none_or(|best| more_recent(&edit, best))
        {
            latest_edit.insert(parent, edit);
        }
    }
    for (parent, edit) in latest_edit {
        let formatted = client_event(conn, &edit, Some(viewer), now)?;
        out.entry(parent)
            .or_default()
            .insert("m.replace".into(), formatted);
    }

    // m.thread: a summary, with the latest reply formatted (and its own edit bundled).
    if with_threads {
        let summaries =
            rel_store::thread_summaries(conn, room_id, &ids, viewer.user_id, after, upto)?;
        let streams: Vec<i64> = summaries.iter().map(|s| s.latest).collect();
        let latest_events = rel_store::events_at(conn, &streams)?;
        let mut latest = client_events_nested(conn, room_id, &latest_events, viewer, range, now)?;
        for s in summaries {
            let Some(root) = parents.get(s.root.as_str()) else {
                continue;
            };
            let Some(latest_event) = latest_events
                .iter()
                .position(|e| e.stream == Some(s.latest))
                .and_then(|i| latest[i].take())
            else {
                continue;
            };
            out.entry(s.root.clone()).or_default().insert(
                "m.thread".into(),
                json!({
                    "latest_event": latest_event,
                    "count": s.count,
                    "current_user_participated": s.user_replied || root.sender == viewer.user_id,
                }),
            );
        }
    }

    // m.reference: the ids of the referencing events.
    let mut references: HashMap<String, Vec<Value>> = HashMap::new();
    for (parent, child) in rel_store::child_ids(conn, room_id, &ids, "m.reference", after, upto)? {
        references
            .entry(parent)
            .or_default()
            .push(json!({ "event_id": child }));
    }
    for (parent, chunk) in references {
        out.entry(parent)
            .or_default()
            .insert("m.reference".into(), json!({ "chunk": chunk }));
    }
    Ok(out)
}

/// Formats the latest events of threads with their own aggregations (but no nested threads:
/// a thread reply cannot root another thread).
fn client_events_nested(
    conn: &Connection,
    room_id: &str,
    events: &[StoredEvent],
    viewer: Viewer<'_>,
    range: Visible,
    now: i64,
) -> Result<Vec<Option<Value>>> {
    let mut bundles = aggregations(conn, room_id, events, viewer, range, now, false)?;
    events
        .iter()
        .map(|ev| {
            let mut v = client_event(conn, ev, Some(viewer), now)?;
            if let Some(bundle) = bundles.remove(&ev.event_id) {
                v["unsigned"]["m.relations"] = Value::Object(bundle);
            }
            Ok(Some(v))
        })
        .collect()
}

/// Checks the relation a local user's new event declares, before it is sent:
/// - a thread cannot start from an event that itself relates to another
///   (`400 M_UNKNOWN`, as the spec asks);
/// - the same sender cannot annotate an event twice with the same event type and key
///   (`400 M_DUPLICATE_ANNOTATION`) while the first annotation stands.
pub fn check_new_relation(
    conn: &Connection,
    room_id: &str,
    sender: &str,
    tpl: &super::EventTemplate,
) -> Result<()> {
    if tpl.state_key.is_some() {
        return Ok(());
    }
    let Some(rel) = tpl.content.get("m.relates_to") else {
        return Ok(());
    };
    let (Some(rel_type), Some(target)) = (
        rel.get("rel_type").and_then(Value::as_str),
        rel.get("event_id").and_then(Value::as_str),
    ) else {
        return Ok(());
    };
    match rel_type {
        "m.thread" => {
            let Some(parent) = ev_store::get_event(conn, target)? else {
                // Possibly an event this node has not received yet.
                return Ok(());
            };
            if parent.room_id == room_id && own_rel_type(&parent).is_some() {
                return Err(MatrixError::bad_request(
                    "Cannot start a thread from an event that relates to another event",
                )
                .into());
            }
            Ok(())
        }
        "m.annotation" => {
            let Some(key) = rel.get("key").and_then(Value::as_str) else {
                return Ok(());
            };
            for json in rel_store::annotations_by(conn, target, sender, &tpl.event_type)? {
                let existing: Value = serde_json::from_str(&json)?;
                if existing
                    .pointer("/content/m.relates_to/key")
                    .and_then(Value::as_str)
                    == Some(key)
                {
                    return Err(MatrixError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        ErrorCode::DuplicateAnnotation,
                        "You already sent this annotation for this event",
                    )
                    .into());
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Parameters of `/relations`.
#[derive(Debug, Clone)]
pub struct RelationsQuery {
    /// Only relations of this type.
    pub rel_type: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Start token.
    pub from: Option<String>,
    /// End token.
    pub to: Option<String>,
    /// Direction (backwards by default).
    pub dir: Direction,
    /// Page size.
    pub limit: usize,
    /// `Some(true)` follows relations of relations; `Some(_)` asks for `recursion_depth`.
    pub recurse: Option<bool>,
}

/// Which threads `/threads` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadsInclude {
    /// Every thread in the room.
    All,
    /// Threads the user started or replied to.
    Participated,
}

/// Parameters of `/threads`.
#[derive(Debug, Clone)]
pub struct ThreadsQuery {
    /// Which threads.
    pub include: ThreadsInclude,
    /// Page size (at least 1).
    pub limit: usize,
    /// A `next_batch` from an earlier page.
    pub from: Option<String>,
}

impl Rooms {
    /// `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`.
    pub async fn relations(
        &self,
        user: &str,
        device: &str,
        room_id: &str,
        event_id: &str,
        q: RelationsQuery,
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
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                let not_found = || MatrixError::not_found("Event not found");
                let parent = ev_store::get_event(conn, &event_id)?.ok_or_else(not_found)?;
                if parent.room_id != room_id
                    || parent.rejected
                    || parent
                        .stream
                        .is_none_or(|s| s <= range.floor || s > range.upto)
                {
                    return Err(not_found().into());
                }
                let from = position(q.from.as_deref(), "from")?;
                let to = position(q.to.as_deref(), "to")?;
                // The page is `after < stream <= upto`; tokens sit between positions.
                let (after, upto, newest_first) = match q.dir {
                    Direction::Backward => (
                        to.unwrap_or(range.floor).max(range.floor),
                        from.unwrap_or(range.upto).min(range.upto),
                        true,
                    ),
                    Direction::Forward => (
                        from.unwrap_or(range.floor).max(range.floor),
                        to.unwrap_or(range.upto).min(range.upto),
                        false,
                    ),
                };
                let depth = if q.recurse == Some(true) {
                    MAX_RECURSION_DEPTH
                } else {
                    1
                };
                let mut events = if after < upto && q.limit > 0 {
                    rel_store::related_events(
                        conn,
                        &RelatedQuery {
                            room_id: &room_id,
                            event_id: &event_id,
                            rel_type: q.rel_type.as_deref(),
                            event_type: q.event_type.as_deref(),
                            max_depth: depth,
                            visible_after: range.floor,
                            visible_upto: range.upto,
                            after,
                            upto,
                            limit: q.limit + 1,
                            newest_first,
                        },
                    )?
                } else {
                    Vec::new()
                };
                let more = events.len() > q.limit;
                events.truncate(q.limit);
                let viewer = Viewer {
                    user_id: &user,
                    device_id: Some(&device),
                };
                let chunk = client_events(conn, &room_id, &events, viewer, Some(range), now_ms())?;
                let mut body = json!({ "chunk": chunk });
                if more && let Some(last) = events.last().and_then(|e| e.stream) {
                    let next = match q.dir {
                        Direction::Backward => last - 1,
                        Direction::Forward => last,
                    };
                    body["next_batch"] = json!(token(next));
                }
                if let Some(from) = &q.from {
                    body["prev_batch"] = json!(from);
                }
                if q.recurse.is_some() {
                    body["recursion_depth"] = json!(depth);
                }
                Ok(body)
            })
            .await
    }

    /// `GET /rooms/{roomId}/threads`: thread roots, the most recently active thread first.
    pub async fn threads(
        &self,
        user: &str,
        device: &str,
        room_id: &str,
        q: ThreadsQuery,
    ) -> Result<Value> {
        let (user, device, room_id) = (user.to_owned(), device.to_owned(), room_id.to_owned());
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                let range = require_visible(conn, &room_id, &user, now_pos)?;
                // Threads whose latest reply sits at or below the token's position remain.
                let before = match position(q.from.as_deref(), "from")? {
                    Some(p) => p + 1,
                    None => range.upto + 1,
                };
                let participant =
                    (q.include == ThreadsInclude::Participated).then_some(user.as_str());
                let limit = q.limit.max(1);
                let mut roots = rel_store::thread_roots(
                    conn,
                    &room_id,
                    participant,
                    range.floor,
                    range.upto,
                    before,
                    limit + 1,
                )?;
                let more = roots.len() > limit;
                roots.truncate(limit);
                let ids: Vec<&str> = roots.iter().map(|(id, _)| id.as_str()).collect();
                let mut by_id: HashMap<String, StoredEvent> = rel_store::events_by_id(conn, &ids)?
                    .into_iter()
                    .map(|e| (e.event_id.clone(), e))
                    .collect();
                let events: Vec<StoredEvent> =
                    ids.iter().filter_map(|id| by_id.remove(*id)).collect();
                let viewer = Viewer {
                    user_id: &user,
                    device_id: Some(&device),
                };
                let chunk = client_events(conn, &room_id, &events, viewer, Some(range), now_ms())?;
                let mut body = json!({ "chunk": chunk });
                if more && let Some((_, latest)) = roots.last() {
                    body["next_batch"] = json!(token(latest - 1));
                }
                Ok(body)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, sender: &str, ty: &str, ts: i64, content: Value) -> StoredEvent {
        StoredEvent {
            event_id: id.into(),
            room_id: "!r:x".into(),
            stream: Some(1),
            event_type: ty.into(),
            state_key: None,
            sender: sender.into(),
            origin_server_ts: ts,
            json: json!({ "type": ty, "sender": sender, "content": content }).to_string(),
            state_before: None,
            state_after: None,
            rejected: false,
            redacted_by: None,
            prev_state: None,
            txn_device: None,
            txn_id: None,
        }
    }

    fn replacement(id: &str, sender: &str, ty: &str, ts: i64) -> StoredEvent {
        let content = json!({
            "body": "* new",
            "m.new_content": { "body": "new" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$orig" },
        });
        event(id, sender, ty, ts, content)
    }

    #[test]
    fn edits_must_come_from_the_sender_with_the_same_type_and_new_content() {
        let original = event(
            "$orig",
            "@a:x",
            "m.room.message",
            1,
            json!({ "body": "old" }),
        );
        assert!(valid_edit(
            &original,
            &replacement("$e", "@a:x", "m.room.message", 2)
        ));
        assert!(!valid_edit(
            &original,
            &replacement("$e", "@b:x", "m.room.message", 2)
        ));
        assert!(!valid_edit(
            &original,
            &replacement("$e", "@a:x", "m.sticker", 2)
        ));
        let mut state_edit = replacement("$e", "@a:x", "m.room.message", 2);
        state_edit.state_key = Some(String::new());
        assert!(!valid_edit(&original, &state_edit));
        let no_new_content = event(
            "$e",
            "@a:x",
            "m.room.message",
            2,
            json!({ "body": "* new", "m.relates_to": { "rel_type": "m.replace", "event_id": "$orig" } }),
        );
        assert!(!valid_edit(&original, &no_new_content));
        // An encrypted edit hides m.new_content in its ciphertext.
        let encrypted_original = event("$orig", "@a:x", "m.room.encrypted", 1, json!({}));
        let encrypted_edit = event(
            "$e",
            "@a:x",
            "m.room.encrypted",
            2,
            json!({ "ciphertext": "…", "m.relates_to": { "rel_type": "m.replace", "event_id": "$orig" } }),
        );
        assert!(valid_edit(&encrypted_original, &encrypted_edit));
    }

    #[test]
    fn the_most_recent_edit_is_by_timestamp_then_event_id() {
        let early = replacement("$zzz", "@a:x", "m.room.message", 1);
        let late = replacement("$aaa", "@a:x", "m.room.message", 2);
        assert!(more_recent(&late, &early));
        assert!(!more_recent(&early, &late));
        let same_ts = replacement("$bbb", "@a:x", "m.room.message", 2);
        assert!(more_recent(&same_ts, &late));
        assert!(!more_recent(&late, &same_ts));
    }
}
