//! Room summaries (MSC3266) and space hierarchies (`/hierarchy`), over the rooms this server
//! holds.
//!
//! Who may see a room: its members and invitees, and anyone when its join rule lets them ask
//! to join (`public`, `knock`), when its history is `world_readable`, or when it is
//! `restricted`/`knock_restricted` and they are joined to one of the rooms the rule allows.
//! Rooms this server does not hold are left out of a hierarchy.

use std::collections::{HashSet, VecDeque};

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::Rooms;
use crate::{
    error::{MatrixError, Result},
    storage::{events as ev_store, state as state_store},
};

/// Most rooms one hierarchy request walks, however deep or wide the space.
const MAX_WALKED_ROOMS: usize = 1000;
/// Longest `order` of a space child the spec lets count.
const MAX_ORDER_CHARS: usize = 50;

/// What a client asks of `/hierarchy`.
#[derive(Debug, Clone)]
pub struct HierarchyQuery {
    /// Rooms on one page.
    pub limit: usize,
    /// How far below the root to go (the root is at depth 0).
    pub max_depth: usize,
    /// Only children marked `suggested`.
    pub suggested_only: bool,
    /// Rooms of the walk already served (from a `next_batch` token).
    pub skip: usize,
}

fn content(conn: &Connection, room: &str, ty: &str, key: &str) -> Result<Option<Value>> {
    let Some(id) = state_store::current_state_event(conn, room, ty, key)? else {
        return Ok(None);
    };
    let Some(json) = ev_store::get_event_json(conn, &id)? else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&json)?;
    Ok(v.get("content").cloned())
}

fn field(conn: &Connection, room: &str, ty: &str, name: &str) -> Result<Option<Value>> {
    Ok(content(conn, room, ty, "")?.and_then(|c| c.get(name).cloned()))
}

/// The rooms a `restricted` join rule allows members of.
fn allowed_rooms(join_rules: &Value) -> Vec<String> {
    join_rules
        .get("allow")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter(|a| a.get("type").and_then(Value::as_str) == Some("m.room_membership"))
                .filter_map(|a| a.get("room_id").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `user` (or an anonymous caller) may see the room's summary.
fn may_see(conn: &Connection, room: &str, user: Option<&str>) -> Result<bool> {
    if let Some(user) = user
        && ev_store::membership(conn, room, user)?
            .is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
    {
        return Ok(true);
    }
    if field(
        conn,
        room,
        "m.room.history_visibility",
        "history_visibility",
    )? == Some(json!("world_readable"))
    {
        return Ok(true);
    }
    let rules = content(conn, room, "m.room.join_rules", "")?.unwrap_or_default();
    match rules.get("join_rule").and_then(Value::as_str) {
        Some("public" | "knock") => Ok(true),
        Some("restricted" | "knock_restricted") => {
            let Some(user) = user else { return Ok(false) };
            for allowed in allowed_rooms(&rules) {
                if ev_store::membership(conn, &allowed, user)?
                    .is_some_and(|m| m.membership == "join")
                {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// The summary fields of a room the caller may see.
fn summary(conn: &Connection, room: &str, user: Option<&str>) -> Result<Map<String, Value>> {
    let Some(row) = ev_store::get_room(conn, room)? else {
        return Err(MatrixError::not_found("Room not found").into());
    };
    let joined = ev_store::room_members(conn, room, Some("join"))?.len();
    let rules = content(conn, room, "m.room.join_rules", "")?.unwrap_or_default();
    let join_rule = rules
        .get("join_rule")
        .and_then(Value::as_str)
        .unwrap_or("invite")
        .to_owned();
    let mut out = Map::new();
    out.insert("room_id".into(), json!(room));
    out.insert("num_joined_members".into(), json!(joined));
    out.insert("join_rule".into(), json!(join_rule));
    out.insert(
        "world_readable".into(),
        json!(
            field(
                conn,
                room,
                "m.room.history_visibility",
                "history_visibility"
            )? == Some(json!("world_readable"))
        ),
    );
    out.insert(
        "guest_can_join".into(),
        json!(field(conn, room, "m.room.guest_access", "guest_access")? == Some(json!("can_join"))),
    );
    out.insert("room_version".into(), json!(row.room_version));
    for (key, ty, name) in [
        ("name", "m.room.name", "name"),
        ("topic", "m.room.topic", "topic"),
        ("avatar_url", "m.room.avatar", "url"),
        ("canonical_alias", "m.room.canonical_alias", "alias"),
        ("room_type", "m.room.create", "type"),
        ("encryption", "m.room.encryption", "algorithm"),
    ] {
        if let Some(v @ Value::String(_)) = field(conn, room, ty, name)? {
            out.insert(key.into(), v);
        }
    }
    if let Some(enc) = out.get("encryption").cloned() {
        out.insert("im.nheko.summary.encryption".into(), enc);
    }
    if matches!(join_rule.as_str(), "restricted" | "knock_restricted") {
        out.insert("allowed_room_ids".into(), json!(allowed_rooms(&rules)));
    }
    if let Some(user) = user
        && let Some(m) = ev_store::membership(conn, room, user)?
    {
        out.insert("membership".into(), json!(m.membership));
    }
    Ok(out)
}

/// A room's `m.space.child` events that name at least one server to join through, stripped,
/// in the spec's order: by `order` (when valid), then by timestamp, then by room id.
fn children(conn: &Connection, room: &str, suggested_only: bool) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for (key, id) in state_store::current_state_of_type(conn, room, "m.space.child")? {
        let Some(ev) = ev_store::get_event(conn, &id)? else {
            continue;
        };
        let v: Value = serde_json::from_str(&ev.json)?;
        let content = v.get("content").cloned().unwrap_or_default();
        let has_via = content
            .get("via")
            .and_then(Value::as_array)
            .is_some_and(|via| !via.is_empty());
        let suggested = content.get("suggested") == Some(&json!(true));
        if !has_via || (suggested_only && !suggested) {
            continue;
        }
        out.push((
            key.clone(),
            json!({
                "type": "m.space.child",
                "state_key": key,
                "sender": ev.sender,
                "origin_server_ts": ev.origin_server_ts,
                "content": content,
            }),
        ));
    }
    let order = |v: &Value| -> Option<String> {
        v.pointer("/content/order")
            .and_then(Value::as_str)
            .filter(|o| {
                o.chars().count() <= MAX_ORDER_CHARS
                    && o.bytes().all(|b| (0x20..=0x7e).contains(&b))
            })
            .map(str::to_owned)
    };
    out.sort_by(|(a_room, a), (b_room, b)| {
        let (oa, ob) = (order(a), order(b));
        // Children with an order come first.
        oa.is_none()
            .cmp(&ob.is_none())
            .then_with(|| oa.cmp(&ob))
            .then_with(|| {
                a["origin_server_ts"]
                    .as_i64()
                    .cmp(&b["origin_server_ts"].as_i64())
            })
            .then_with(|| a_room.cmp(b_room))
    });
    Ok(out)
}

impl Rooms {
    /// The summary of a room this server holds, if the caller may see it (`M_NOT_FOUND`
    /// otherwise, so a hidden room is not told apart from an unknown one).
    pub async fn room_summary(&self, room: &str, user: Option<&str>) -> Result<Value> {
        let (room, user) = (room.to_owned(), user.map(str::to_owned));
        self.db
            .read(move |conn| {
                if ev_store::get_room(conn, &room)?.is_none()
                    || !may_see(conn, &room, user.as_deref())?
                {
                    return Err(MatrixError::not_found("Room not found").into());
                }
                Ok(Value::Object(summary(conn, &room, user.as_deref())?))
            })
            .await
    }

    /// A page of the space hierarchy under `root`, walked breadth first over the rooms this
    /// server holds and the caller may see: `(rooms, rooms walked so far)`, the second only
    /// if more follow.
    pub async fn hierarchy(
        &self,
        root: &str,
        user: &str,
        q: HierarchyQuery,
    ) -> Result<(Vec<Value>, Option<usize>)> {
        let (root, user) = (root.to_owned(), user.to_owned());
        self.db
            .read(move |conn| {
                if ev_store::get_room(conn, &root)?.is_none() {
                    return Err(MatrixError::not_found("Room not found").into());
                }
                if !may_see(conn, &root, Some(&user))? {
                    return Err(MatrixError::forbidden("You may not see this space").into());
                }
                let mut seen: HashSet<String> = HashSet::from([root.clone()]);
                let mut queue = VecDeque::from([(root.clone(), 0usize)]);
                let mut page = Vec::new();
                let mut walked = 0usize;
                while let Some((room, depth)) = queue.pop_front() {
                    if walked >= MAX_WALKED_ROOMS {
                        break;
                    }
                    let kids = children(conn, &room, q.suggested_only)?;
                    if depth < q.max_depth {
                        for (child, _) in &kids {
                            if seen.insert(child.clone())
                                && ev_store::get_room(conn, child)?.is_some()
                                && may_see(conn, child, Some(&user))?
                            {
                                queue.push_back((child.clone(), depth + 1));
                            }
                        }
                    }
                    walked += 1;
                    if walked <= q.skip {
                        continue;
                    }
                    if page.len() == q.limit {
                        // One more room exists: the page ends before it.
                        return Ok((page, Some(walked - 1)));
                    }
                    let mut entry = summary(conn, &room, Some(&user))?;
                    entry.insert(
                        "children_state".into(),
                        Value::Array(kids.into_iter().map(|(_, v)| v).collect()),
                    );
                    page.push(Value::Object(entry));
                }
                Ok((page, None))
            })
            .await
    }
}
