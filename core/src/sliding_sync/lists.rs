//! The room lists: which rooms the lists choose from (with the position that sorts them),
//! which of them pass each list's filters and fall in its ranges, and the rooms the client
//! subscribed to besides.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{BUMP_TYPES, Ctx, ListFilters, ListRequest, RoomParams, state_content};
use crate::{
    error::Result,
    storage::{
        events::{self as ev_store, MembershipRow},
        sliding_sync::{self as store, Position},
        state as state_store, user_data,
    },
};

/// What the lists need to know of a room.
pub(super) struct Candidate {
    pub(super) membership: MembershipRow,
    pub(super) bump_stamp: i64,
    pub(super) is_dm: bool,
}

/// Rooms that `m.direct` account data names as direct chats.
pub(super) fn direct_rooms(conn: &Connection, user: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if let Some(json) = user_data::get_account_data(conn, user, "", "m.direct")?
        && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&json)
    {
        for rooms in map.values() {
            if let Some(rooms) = rooms.as_array() {
                out.extend(rooms.iter().filter_map(Value::as_str).map(str::to_owned));
            }
        }
    }
    Ok(out)
}

/// Whether an invite says it is to a direct chat (`is_direct` in its content).
fn invite_is_direct(conn: &Connection, event_id: &str) -> Result<bool> {
    let Some(json) = ev_store::get_event_json(conn, event_id)? else {
        return Ok(false);
    };
    Ok(serde_json::from_str::<Value>(&json)?
        .pointer("/content/is_direct")
        .and_then(Value::as_bool)
        .unwrap_or(false))
}

/// Rooms the lists choose from: joined, invited and knocked, and rooms left since the last
/// response that the client holds (so that it sees the leave), newest first. Also says
/// whether any of the user's memberships changed since the last response.
pub(super) fn candidates(
    conn: &Connection,
    user: &str,
    since: Option<Position>,
    known: &HashMap<String, i64>,
    direct: &BTreeSet<String>,
) -> Result<(Vec<Candidate>, bool)> {
    let mut candidates = Vec::new();
    let mut memberships_changed = false;
    for m in ev_store::memberships_of_user(conn, user)? {
        let changed = since.is_some_and(|s| m.stream > s.stream);
        memberships_changed |= changed;
        let listed = match m.membership.as_str() {
            "join" | "invite" | "knock" => true,
            "leave" | "ban" => changed && known.contains_key(&m.room_id),
            _ => false,
        };
        if !listed {
            continue;
        }
        let bump_stamp = if m.membership == "join" {
            store::newest_of_types(conn, &m.room_id, BUMP_TYPES)?.unwrap_or(m.stream)
        } else {
            m.stream
        };
        let is_dm = direct.contains(&m.room_id)
            || (m.membership == "invite" && invite_is_direct(conn, &m.event_id)?);
        candidates.push(Candidate {
            membership: m,
            bump_stamp,
            is_dm,
        });
    }
    candidates.sort_by(|a, b| {
        b.bump_stamp
            .cmp(&a.bump_stamp)
            .then_with(|| a.membership.room_id.cmp(&b.membership.room_id))
    });
    Ok((candidates, memberships_changed))
}

/// Which rooms the client wants, with what: those the lists' ranges select, and the rooms it
/// subscribed to. Also the `lists` of the response (each list's count).
pub(super) fn wanted(
    conn: &Connection,
    ctx: &Ctx,
    candidates: &[Candidate],
    by_room: &HashMap<&str, &Candidate>,
) -> Result<(BTreeMap<String, RoomParams>, Map<String, Value>)> {
    let mut wanted: BTreeMap<String, RoomParams> = BTreeMap::new();
    let mut lists = Map::new();
    for (name, list) in &ctx.req.lists {
        let mut members = Vec::new();
        for c in candidates {
            if let Some(f) = &list.filters
                && !passes(conn, c, f)?
            {
                continue;
            }
            members.push(c);
        }
        let ids: Vec<&str> = members
            .iter()
            .map(|c| c.membership.room_id.as_str())
            .collect();
        select_ranges(list, &ids, &mut wanted);
        lists.insert(name.clone(), json!({ "count": members.len() }));
    }
    for (room_id, params) in &ctx.req.room_subscriptions {
        // A subscription to a room the user has nothing to do with is ignored.
        if by_room.contains_key(room_id.as_str())
            || ev_store::membership(conn, room_id, &ctx.user)?.is_some_and(|m| !m.forgotten)
        {
            wanted.entry(room_id.clone()).or_default().merge(params);
        }
    }
    Ok((wanted, lists))
}

fn passes(conn: &Connection, c: &Candidate, f: &ListFilters) -> Result<bool> {
    let room = c.membership.room_id.as_str();
    let invite = c.membership.membership == "invite";
    if f.is_invite.is_some_and(|want| want != invite) || f.is_dm.is_some_and(|want| want != c.is_dm)
    {
        return Ok(false);
    }
    if let Some(want) = f.is_encrypted {
        let encrypted =
            state_store::current_state_event(conn, room, "m.room.encryption", "")?.is_some();
        if want != encrypted {
            return Ok(false);
        }
    }
    // An empty list of types does not filter.
    let room_types = f.room_types.as_ref().filter(|t| !t.is_empty());
    let not_room_types = f.not_room_types.as_ref().filter(|t| !t.is_empty());
    if room_types.is_some() || not_room_types.is_some() {
        let ty = state_content(conn, room, "m.room.create", "")?
            .and_then(|c| c.get("type").and_then(Value::as_str).map(str::to_owned));
        if let Some(types) = room_types
            && !types.contains(&ty)
        {
            return Ok(false);
        }
        if let Some(types) = not_room_types
            && types.contains(&ty)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Adds the rooms a list's ranges select (of `rooms`, the list's rooms in order) to `wanted`,
/// with the list's parameters. Each room is taken once however many ranges cover it, so the
/// work follows the number of ranges plus the number of rooms, not their product.
pub(crate) fn select_ranges(
    list: &ListRequest,
    rooms: &[&str],
    wanted: &mut BTreeMap<String, RoomParams>,
) {
    let Some(last) = rooms.len().checked_sub(1) else {
        return;
    };
    let mut ranges: Vec<(usize, usize)> = list
        .ranges
        .iter()
        .filter_map(|&(start, end)| {
            let start = usize::try_from(start).ok().filter(|s| *s <= last)?;
            let end = usize::try_from(end).unwrap_or(usize::MAX).min(last);
            Some((start, end))
        })
        .collect();
    ranges.sort_unstable();
    // Rooms before `next` are taken already.
    let mut next = 0;
    for (start, end) in ranges {
        for room_id in rooms.iter().take(end + 1).skip(start.max(next)) {
            wanted
                .entry((*room_id).to_owned())
                .or_default()
                .merge(&list.params);
        }
        next = next.max(end + 1);
    }
}
