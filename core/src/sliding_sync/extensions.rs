//! The extensions of a sliding sync response: to-device messages, device-list changes and
//! key counts, account data, read receipts and typing. Each says whether it brought anything
//! new, so that a long-poll with nothing new keeps waiting.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{Ctx, RoomParams};
use crate::{
    e2ee::sync::{SIGNED_CURVE25519, TO_DEVICE_LIMIT, device_list_delta},
    error::Result,
    storage::{keys as key_store, to_device, user_data},
    sync::receipt_content,
    typing::Typing,
};

/// What the extensions need of the rooms part of the response.
pub(super) struct View<'a> {
    /// The rooms the client wants (its lists' ranges and subscriptions).
    pub wanted: &'a BTreeMap<String, RoomParams>,
    /// Rooms sent whole in this response (new to the connection).
    pub initial_rooms: &'a BTreeSet<String>,
    /// Rooms with changes since the last response.
    pub changed: &'a BTreeSet<String>,
    /// Rooms whose typing users changed since the last response.
    pub typing_changed: &'a BTreeSet<String>,
}

/// The extensions the request turned on, as of `now_pos`, and whether any has news.
pub(super) fn build(
    conn: &Connection,
    ctx: &Ctx,
    now_pos: i64,
    typing: &Typing,
    view: &View<'_>,
) -> Result<(Map<String, Value>, bool)> {
    let ext = &ctx.req.extensions;
    let mut extensions = Map::new();
    let mut news = false;
    let mut add = |name: &str, (value, has_news): (Value, bool)| {
        news |= has_news;
        extensions.insert(name.into(), value);
    };
    if ext.to_device.enabled == Some(true) {
        add("to_device", to_device_messages(conn, ctx, now_pos)?);
    }
    if ext.e2ee.on() {
        add("e2ee", e2ee(conn, ctx, now_pos)?);
    }
    if ext.account_data.on() {
        add("account_data", account_data(conn, ctx, view)?);
    }
    if ext.receipts.on() {
        add("receipts", receipts(conn, ctx, view)?);
    }
    if ext.typing.on() {
        add("typing", typing_users(ctx, typing, view));
    }
    Ok((extensions, news))
}

/// To-device messages after the extension's `since`, at most its `limit`.
fn to_device_messages(conn: &Connection, ctx: &Ctx, now_pos: i64) -> Result<(Value, bool)> {
    let ext = &ctx.req.extensions;
    let after = match ext.to_device.since.as_deref() {
        Some(s) => s.parse::<i64>().unwrap_or(0),
        None => 0,
    };
    let limit = ext
        .to_device
        .limit
        .map_or(TO_DEVICE_LIMIT, |l| (l as usize).clamp(1, TO_DEVICE_LIMIT));
    let mut rows = to_device::pending(conn, &ctx.user, &ctx.device, after, now_pos, limit + 1)?;
    let mut next = now_pos.max(after);
    if rows.len() > limit {
        // Whole stream positions only, so that `next_batch` is exact (a position holds at
        // most one message per device).
        let cut = rows[limit].stream;
        rows.retain(|r| r.stream < cut);
        next = cut - 1;
    }
    let events = rows
        .into_iter()
        .map(|r| {
            Ok(json!({
                "sender": r.sender,
                "type": r.event_type,
                "content": serde_json::from_str::<Value>(&r.content)?,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let news = !events.is_empty();
    Ok((
        json!({ "next_batch": next.to_string(), "events": events }),
        news,
    ))
}

/// Device-list changes since the last response, and the device's key counts.
fn e2ee(conn: &Connection, ctx: &Ctx, now_pos: i64) -> Result<(Value, bool)> {
    let user = ctx.user.as_str();
    let (changed_users, left_users) = match ctx.since {
        Some((_, s)) => device_list_delta(conn, user, s.stream, now_pos)?,
        None => (Vec::new(), Vec::new()),
    };
    let news = !changed_users.is_empty() || !left_users.is_empty();
    let mut counts = Map::new();
    counts.insert(SIGNED_CURVE25519.into(), json!(0));
    for (algorithm, count) in key_store::one_time_key_counts(conn, user, &ctx.device)? {
        counts.insert(algorithm, json!(count));
    }
    Ok((
        json!({
            "device_lists": { "changed": changed_users, "left": left_users },
            "device_one_time_keys_count": counts,
            "device_unused_fallback_key_types":
                key_store::unused_fallback_key_types(conn, user, &ctx.device)?,
        }),
        news,
    ))
}

/// Global account data changed since the last response, and that of the rooms in view
/// (all of it for rooms new to the connection).
fn account_data(conn: &Connection, ctx: &Ctx, view: &View<'_>) -> Result<(Value, bool)> {
    let user = ctx.user.as_str();
    let after = ctx.since.map_or(0, |(_, s)| s.stream);
    let mut global = Vec::new();
    let mut per_room: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (room, ty, content) in user_data::account_data_since(conn, user, after)? {
        let event = json!({ "type": ty, "content": serde_json::from_str::<Value>(&content)? });
        if room.is_empty() {
            global.push(event);
        } else if view.wanted.contains_key(&room) && !view.initial_rooms.contains(&room) {
            per_room.entry(room).or_default().push(event);
        }
    }
    if !view.initial_rooms.is_empty() {
        // Rooms new to the connection get all their account data.
        for (room, ty, content) in user_data::account_data_since(conn, user, 0)? {
            if view.initial_rooms.contains(&room) {
                per_room.entry(room).or_default().push(
                    json!({ "type": ty, "content": serde_json::from_str::<Value>(&content)? }),
                );
            }
        }
    }
    let news = !global.is_empty() || !per_room.is_empty();
    Ok((json!({ "global": global, "rooms": per_room }), news))
}

/// Read receipts of the rooms in view that changed (all of them for rooms new to the
/// connection).
fn receipts(conn: &Connection, ctx: &Ctx, view: &View<'_>) -> Result<(Value, bool)> {
    let mut out = Map::new();
    for room in view.wanted.keys() {
        let initial = view.initial_rooms.contains(room);
        if !initial && !view.changed.contains(room) {
            continue;
        }
        let after = if initial {
            0
        } else {
            ctx.since.map_or(0, |(_, s)| s.stream)
        };
        let content = receipt_content(user_data::receipts_since(conn, room, after)?, &ctx.user);
        if !content.is_empty() {
            out.insert(
                room.clone(),
                json!({ "type": "m.receipt", "content": content }),
            );
        }
    }
    let news = !out.is_empty();
    Ok((json!({ "rooms": out }), news))
}

/// Who is typing in the rooms in view where that changed (in rooms new to the connection,
/// only when someone is).
fn typing_users(ctx: &Ctx, typing: &Typing, view: &View<'_>) -> (Value, bool) {
    let mut out = Map::new();
    for room in view.wanted.keys() {
        let initial = view.initial_rooms.contains(room);
        if !initial && !view.typing_changed.contains(room) {
            continue;
        }
        let since_serial = if initial {
            None
        } else {
            ctx.since.map(|(_, s)| s.typing)
        };
        if let Some(users) = typing.changed_since(room, since_serial)
            && (!initial || !users.is_empty())
        {
            out.insert(
                room.clone(),
                json!({ "type": "m.typing", "content": { "user_ids": users } }),
            );
        }
    }
    let news = !out.is_empty();
    (json!({ "rooms": out }), news)
}
