//! Simplified sliding sync (MSC4186): `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
//!
//! A client keeps a *connection* (per device and `conn_id`) and gets back an opaque `pos` with
//! each response. The node stores, per connection, the positions it handed out and which rooms
//! each response brought up to date (see [`crate::storage::sliding_sync`]), so a client resumes
//! from its `pos` after the node restarts. A request with `pos` gets only rooms that changed
//! since; those are found from the global stream position, so an idle poll costs the same
//! however many rooms the user is in.
//!
//! Lists are sorted by `bump_stamp` (the stream position of the room's newest message-like
//! event), newest first. Current clients send their lists, subscriptions and extensions in
//! full with every request; for older ones, a list's `required_state`, `filters` and
//! `timeline_limit` and the extensions' settings carry over from the connection's previous
//! request when left out.

mod request;
pub(crate) mod room;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use axum::http::StatusCode;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

pub use request::{Extensions, ListFilters, ListRequest, Request, RoomParams};

use crate::{
    e2ee::sync::{SIGNED_CURVE25519, TO_DEVICE_LIMIT, device_list_delta},
    error::{ErrorCode, MatrixError, Result},
    notifier::Notifier,
    storage::{
        Db,
        events::{self as ev_store, MembershipRow},
        keys as key_store, now_ms,
        sliding_sync::{self as store, ConnKey, Position},
        state as state_store, to_device, user_data,
    },
    sync::receipt_content,
    typing::Typing,
};

/// Longest long-poll honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `conn_id` accepted.
const MAX_CONN_ID: usize = 255;
/// Most timeline events per room.
const MAX_TIMELINE_LIMIT: u64 = 500;
/// Event types that move a room up the list (as Synapse and the MSC suggest).
pub(crate) const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// The `400 M_UNKNOWN_POS` error: the client must start the connection afresh.
fn unknown_pos() -> MatrixError {
    MatrixError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::UnknownPos,
        "Unknown or expired position; start the connection again without pos",
    )
}

/// The sliding sync service.
#[derive(Clone)]
pub struct SlidingSync {
    db: Db,
    notifier: Arc<Notifier>,
    typing: Typing,
}

/// Who is syncing, and where the connection stood.
struct Ctx {
    user: String,
    device: String,
    conn_id: String,
    /// The acknowledged position (`None` on a fresh connection).
    since: Option<(i64, Position)>,
    req: Request,
}

impl Ctx {
    fn key(&self) -> ConnKey<'_> {
        ConnKey {
            user_id: &self.user,
            device_id: &self.device,
            conn_id: &self.conn_id,
        }
    }
}

/// A built response and what it brought up to date.
struct Built {
    body: Value,
    rooms_sent: Vec<(String, i64)>,
    has_news: bool,
}

impl SlidingSync {
    /// Creates the service.
    pub fn new(db: Db, notifier: Arc<Notifier>, typing: Typing) -> Self {
        Self {
            db,
            notifier,
            typing,
        }
    }

    /// Answers one request (its JSON body), long-polling up to `timeout` when the client gave
    /// a `pos`.
    pub async fn sync(
        &self,
        user_id: &str,
        device_id: &str,
        pos: Option<&str>,
        timeout: Duration,
        body: Value,
    ) -> Result<Value> {
        let conn_id = conn_id(&body)?;
        let pos_id = match pos {
            None | Some("") => None,
            Some(p) => Some(p.parse::<i64>().map_err(|_| unknown_pos())?),
        };
        // Acknowledge the position (or start afresh), fill in parameters the client sent
        // earlier on this connection, and drop the to-device messages it has received.
        let (user, device, cid) = (user_id.to_owned(), device_id.to_owned(), conn_id.clone());
        let (since, req, to_device_since) = self
            .db
            .write(move |txn| {
                let key = ConnKey {
                    user_id: &user,
                    device_id: &device,
                    conn_id: &cid,
                };
                let mut body = body;
                let since = match pos_id {
                    Some(id) => {
                        let p = store::position(txn, key, id)?.ok_or_else(unknown_pos)?;
                        store::acknowledge(txn, key, id)?;
                        if let Some(stored) = store::connection_params(txn, key)?
                            && let Ok(stored) = serde_json::from_str::<Value>(&stored)
                        {
                            apply_sticky(&mut body, &stored);
                        }
                        Some((id, p))
                    }
                    None => {
                        store::reset_connection(txn, key)?;
                        None
                    }
                };
                let (req, to_device_since) = read_request(&body)?;
                if let Some(upto) = to_device_since {
                    to_device::delete_upto(txn, &user, &device, upto)?;
                }
                store::set_connection_params(txn, key, &body.to_string())?;
                Ok((since, req, to_device_since))
            })
            .await?;
        let ctx = Arc::new(Ctx {
            user: user_id.to_owned(),
            device: device_id.to_owned(),
            conn_id,
            since,
            req,
        });

        let deadline = tokio::time::Instant::now() + timeout.min(MAX_TIMEOUT);
        let mut changes = self.notifier.subscribe();
        loop {
            let now_pos = self.db.current_pos();
            let typing_serial = self.typing.serial();
            let c = ctx.clone();
            let typing = self.typing.clone();
            let built = self
                .db
                .read(move |conn| {
                    if let Some((_, p)) = c.since
                        && !anything_new(conn, &c, p, now_pos, &typing, to_device_since)?
                    {
                        return Ok(None);
                    }
                    build(conn, &c, now_pos, &typing).map(Some)
                })
                .await?;
            if let Some(built) = built
                && (built.has_news || ctx.since.is_none())
            {
                let c = ctx.clone();
                let position = Position {
                    stream: now_pos,
                    typing: typing_serial,
                };
                let rooms = built.rooms_sent;
                let pos_id = self
                    .db
                    .write(move |txn| {
                        store::record_response(
                            txn,
                            c.key(),
                            c.since.map(|(id, _)| id),
                            position,
                            &rooms,
                            now_ms(),
                        )
                    })
                    .await?;
                let mut body = built.body;
                body["pos"] = json!(pos_id.to_string());
                if let Some(txn_id) = &ctx.req.txn_id {
                    body["txn_id"] = json!(txn_id);
                }
                return Ok(body);
            }
            if tokio::time::Instant::now() >= deadline || self.notifier.is_closing() {
                // Nothing new: the client keeps its position.
                let mut body = json!({ "pos": pos.unwrap_or_default(), "lists": {}, "rooms": {}, "extensions": {} });
                if let Some(txn_id) = &ctx.req.txn_id {
                    body["txn_id"] = json!(txn_id);
                }
                return Ok(body);
            }
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return Err(MatrixError::internal().into());
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// The connection a request body names (`conn_id`; none is the empty string).
pub(crate) fn conn_id(body: &Value) -> Result<String> {
    match body.get("conn_id") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(c)) if c.len() <= MAX_CONN_ID => Ok(c.clone()),
        Some(Value::String(_)) => Err(MatrixError::invalid_param("conn_id is too long").into()),
        Some(_) => Err(MatrixError::bad_json("conn_id must be a string").into()),
    }
}

/// Reads a request body (with what carried over from the connection's previous request
/// filled in): the request, and the to-device `since` token when that extension is on.
pub(crate) fn read_request(body: &Value) -> Result<(Request, Option<i64>)> {
    let req: Request = serde_json::from_value(body.clone())
        .map_err(|e| MatrixError::bad_json(format!("Invalid request: {e}")))?;
    validate(&req)?;
    let to_device_since = match req.extensions.to_device.since.as_deref() {
        Some(s) if req.extensions.to_device.enabled == Some(true) => Some(
            s.parse::<i64>()
                .map_err(|_| MatrixError::invalid_param("Invalid to_device since token"))?,
        ),
        _ => None,
    };
    Ok((req, to_device_since))
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

/// Checks what serde cannot.
fn validate(req: &Request) -> Result<()> {
    for (name, list) in &req.lists {
        if list.ranges.iter().any(|(a, b)| a > b) {
            return Err(MatrixError::invalid_param(format!(
                "List {name} has a range whose start is past its end"
            ))
            .into());
        }
    }
    // Every selected room holds the rules of the lists that show it: their size is bounded
    // for the whole request, far above what clients send (a few dozen short rules).
    let rules = req
        .lists
        .values()
        .map(|l| &l.params)
        .chain(req.room_subscriptions.values())
        .flat_map(|p| &p.required_state);
    let (mut count, mut bytes) = (0usize, 0usize);
    for (ty, key) in rules {
        count += 1;
        bytes += ty.len() + key.len();
    }
    if count > MAX_REQUIRED_STATE_RULES || bytes > MAX_REQUIRED_STATE_BYTES {
        return Err(MatrixError::invalid_param(format!(
            "required_state asks for too much: at most {MAX_REQUIRED_STATE_RULES} rules of \
             {MAX_REQUIRED_STATE_BYTES} bytes in all per request"
        ))
        .into());
    }
    Ok(())
}

/// Most `required_state` rules in one request, over all lists and room subscriptions.
const MAX_REQUIRED_STATE_RULES: usize = 1_000;
/// Most bytes of `required_state` rules in one request.
const MAX_REQUIRED_STATE_BYTES: usize = 16 * 1024;

/// Fills in what a request leaves out from the connection's previous request: older clients
/// (MSC3575) send a list's `required_state`, `filters` and `timeline_limit`, and the
/// extensions' settings, only when they change.
pub(crate) fn apply_sticky(body: &mut Value, stored: &Value) {
    let Some(body) = body.as_object_mut() else {
        return;
    };
    if let (Some(lists), Some(old_lists)) = (
        body.get_mut("lists").and_then(Value::as_object_mut),
        stored.get("lists").and_then(Value::as_object),
    ) {
        for (name, list) in lists.iter_mut() {
            let (Some(list), Some(old)) = (
                list.as_object_mut(),
                old_lists.get(name).and_then(Value::as_object),
            ) else {
                continue;
            };
            for field in ["required_state", "filters", "timeline_limit"] {
                if !list.contains_key(field)
                    && let Some(v) = old.get(field)
                {
                    list.insert(field.into(), v.clone());
                }
            }
        }
    }
    if let Some(old_ext) = stored.get("extensions").and_then(Value::as_object) {
        let ext = body
            .entry("extensions")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(ext) = ext.as_object_mut() else {
            return;
        };
        for (name, old) in old_ext {
            let Some(old) = old.as_object() else {
                continue;
            };
            let current = ext
                .entry(name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(current) = current.as_object_mut() {
                // `since` moves on with every response: never carried over.
                for (k, v) in old {
                    if k != "since" && !current.contains_key(k) {
                        current.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
}

/// A cheap test of whether anything concerning the connection happened after `since`: its
/// cost follows the number of changes, not the number of rooms.
fn anything_new(
    conn: &Connection,
    ctx: &Ctx,
    since: Position,
    now_pos: i64,
    typing: &Typing,
    to_device_since: Option<i64>,
) -> Result<bool> {
    let user = ctx.user.as_str();
    if !store::rooms_changed_between(conn, user, since.stream, now_pos)?.is_empty() {
        return Ok(true);
    }
    let ext = &ctx.req.extensions;
    if ext.account_data.on()
        && store::global_account_data_changed(conn, user, since.stream, now_pos)?
    {
        return Ok(true);
    }
    if ext.typing.on() {
        for room in typing.rooms_changed_since(since.typing) {
            if ev_store::membership(conn, &room, user)?.is_some_and(|m| m.membership == "join") {
                return Ok(true);
            }
        }
    }
    if ext.to_device.enabled == Some(true) {
        let after = to_device_since.unwrap_or(0);
        if !to_device::pending(conn, user, &ctx.device, after, now_pos, 1)?.is_empty() {
            return Ok(true);
        }
    }
    if ext.e2ee.on() {
        let (changed, left) = device_list_delta(conn, user, since.stream, now_pos)?;
        if !changed.is_empty() || !left.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the lists need to know of a room.
struct Candidate {
    membership: MembershipRow,
    bump_stamp: i64,
    is_dm: bool,
}

/// Rooms that `m.direct` account data names as direct chats.
fn direct_rooms(conn: &Connection, user: &str) -> Result<BTreeSet<String>> {
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

/// The content of a room's current state event, if any.
pub(crate) fn state_content(
    conn: &Connection,
    room_id: &str,
    ty: &str,
    key: &str,
) -> Result<Option<Value>> {
    let Some(id) = state_store::current_state_event(conn, room_id, ty, key)? else {
        return Ok(None);
    };
    let Some(json) = ev_store::get_event_json(conn, &id)? else {
        return Ok(None);
    };
    Ok(serde_json::from_str::<Value>(&json)?
        .get("content")
        .cloned())
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

/// Builds a whole response as of `now_pos`.
fn build(conn: &Connection, ctx: &Ctx, now_pos: i64, typing: &Typing) -> Result<Built> {
    let user = ctx.user.as_str();
    let since = ctx.since.map(|(_, p)| p);
    let known: HashMap<String, i64> = if since.is_some() {
        store::known_rooms(conn, ctx.key())?
    } else {
        HashMap::new()
    };
    let direct = direct_rooms(conn, user)?;

    // Rooms the lists choose from: joined, invited and knocked, and rooms left since the
    // last response that the client holds (so that it sees the leave).
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

    // Which rooms the client wants, with what.
    let mut wanted: BTreeMap<String, RoomParams> = BTreeMap::new();
    let mut lists = Map::new();
    for (name, list) in &ctx.req.lists {
        let mut members = Vec::new();
        for c in &candidates {
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
    let by_room: HashMap<&str, &Candidate> = candidates
        .iter()
        .map(|c| (c.membership.room_id.as_str(), c))
        .collect();
    for (room_id, params) in &ctx.req.room_subscriptions {
        // A subscription to a room the user has nothing to do with is ignored.
        if by_room.contains_key(room_id.as_str())
            || ev_store::membership(conn, room_id, user)?.is_some_and(|m| !m.forgotten)
        {
            wanted.entry(room_id.clone()).or_default().merge(params);
        }
    }

    // Rooms to send: new to the connection, or with new events since the client last got them.
    let changed: BTreeSet<String> = match since {
        Some(s) => store::rooms_changed_between(conn, user, s.stream, now_pos)?,
        None => BTreeSet::new(),
    };
    let typing_changed: BTreeSet<String> = match since {
        Some(s) if ctx.req.extensions.typing.on() => {
            typing.rooms_changed_since(s.typing).into_iter().collect()
        }
        _ => BTreeSet::new(),
    };
    let mut rooms = Map::new();
    let mut rooms_sent = Vec::new();
    let mut initial_rooms = BTreeSet::new();
    let now = now_ms();
    for (room_id, params) in &wanted {
        let membership = match by_room.get(room_id.as_str()) {
            Some(c) => c.membership.clone(),
            None => match ev_store::membership(conn, room_id, user)? {
                Some(m) => m,
                None => continue,
            },
        };
        // A join is new to the client even where it held the room before (an invite, an
        // earlier membership): it gets the room whole.
        let known_upto = known
            .get(room_id)
            .copied()
            .filter(|upto| !(membership.membership == "join" && membership.stream > *upto));
        if let Some(upto) = known_upto {
            let new_events = changed.contains(room_id)
                && ev_store::count_room_events_between(conn, room_id, upto, now_pos)? > 0;
            // A read receipt of the user's own resets the room's unread counts: the client
            // learns the new counts from the room itself.
            let own_receipt = !new_events
                && changed.contains(room_id)
                && store::own_receipt_between(conn, room_id, user, upto, now_pos)?;
            if !new_events && !own_receipt && membership.stream <= upto {
                continue;
            }
        } else {
            initial_rooms.insert(room_id.clone());
        }
        let bump_stamp = by_room
            .get(room_id.as_str())
            .map_or(membership.stream, |c| c.bump_stamp);
        let body = room::RoomBuilder {
            conn,
            user,
            device: &ctx.device,
            now_pos,
            now,
        }
        .build(
            &membership,
            params,
            known_upto,
            bump_stamp,
            by_room
                .get(room_id.as_str())
                .map_or(direct.contains(room_id), |c| c.is_dm),
        )?;
        rooms.insert(room_id.clone(), body);
        rooms_sent.push((room_id.clone(), now_pos));
    }

    // Extensions.
    let ext = &ctx.req.extensions;
    let mut extensions = Map::new();
    let mut ext_news = false;
    let in_view = |room: &str| wanted.contains_key(room);
    if ext.to_device.enabled == Some(true) {
        let after = match ext.to_device.since.as_deref() {
            Some(s) => s.parse::<i64>().unwrap_or(0),
            None => 0,
        };
        let limit = ext
            .to_device
            .limit
            .map_or(TO_DEVICE_LIMIT, |l| (l as usize).clamp(1, TO_DEVICE_LIMIT));
        let mut rows = to_device::pending(conn, user, &ctx.device, after, now_pos, limit + 1)?;
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
        ext_news |= !events.is_empty();
        extensions.insert(
            "to_device".into(),
            json!({ "next_batch": next.to_string(), "events": events }),
        );
    }
    if ext.e2ee.on() {
        let (changed_users, left_users) = match since {
            Some(s) => device_list_delta(conn, user, s.stream, now_pos)?,
            None => (Vec::new(), Vec::new()),
        };
        ext_news |= !changed_users.is_empty() || !left_users.is_empty();
        let mut counts = Map::new();
        counts.insert(SIGNED_CURVE25519.into(), json!(0));
        for (algorithm, count) in key_store::one_time_key_counts(conn, user, &ctx.device)? {
            counts.insert(algorithm, json!(count));
        }
        extensions.insert(
            "e2ee".into(),
            json!({
                "device_lists": { "changed": changed_users, "left": left_users },
                "device_one_time_keys_count": counts,
                "device_unused_fallback_key_types":
                    key_store::unused_fallback_key_types(conn, user, &ctx.device)?,
            }),
        );
    }
    if ext.account_data.on() {
        let after = since.map_or(0, |s| s.stream);
        let mut global = Vec::new();
        let mut per_room: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (room, ty, content) in user_data::account_data_since(conn, user, after)? {
            let event = json!({ "type": ty, "content": serde_json::from_str::<Value>(&content)? });
            if room.is_empty() {
                global.push(event);
            } else if in_view(&room) && !initial_rooms.contains(&room) {
                per_room.entry(room).or_default().push(event);
            }
        }
        if !initial_rooms.is_empty() {
            // Rooms new to the connection get all their account data.
            for (room, ty, content) in user_data::account_data_since(conn, user, 0)? {
                if initial_rooms.contains(&room) {
                    per_room.entry(room).or_default().push(
                        json!({ "type": ty, "content": serde_json::from_str::<Value>(&content)? }),
                    );
                }
            }
        }
        ext_news |= !global.is_empty() || !per_room.is_empty();
        extensions.insert(
            "account_data".into(),
            json!({ "global": global, "rooms": per_room }),
        );
    }
    if ext.receipts.on() {
        let mut out = Map::new();
        for room in wanted.keys() {
            let initial = initial_rooms.contains(room);
            if !initial && !changed.contains(room) {
                continue;
            }
            let after = if initial {
                0
            } else {
                since.map_or(0, |s| s.stream)
            };
            let content = receipt_content(user_data::receipts_since(conn, room, after)?, user);
            if !content.is_empty() {
                out.insert(
                    room.clone(),
                    json!({ "type": "m.receipt", "content": content }),
                );
            }
        }
        ext_news |= !out.is_empty();
        extensions.insert("receipts".into(), json!({ "rooms": out }));
    }
    if ext.typing.on() {
        let mut out = Map::new();
        for room in wanted.keys() {
            let initial = initial_rooms.contains(room);
            if !initial && !typing_changed.contains(room) {
                continue;
            }
            let since_serial = if initial {
                None
            } else {
                since.map(|s| s.typing)
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
        ext_news |= !out.is_empty();
        extensions.insert("typing".into(), json!({ "rooms": out }));
    }

    let has_news = !rooms.is_empty() || ext_news || memberships_changed;
    Ok(Built {
        body: json!({ "lists": lists, "rooms": rooms, "extensions": extensions }),
        rooms_sent,
        has_news,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(body: Value) -> ListRequest {
        serde_json::from_value(body).expect("list")
    }

    #[test]
    fn ranges_take_each_room_once_with_its_rules_once() {
        let rooms = ["!0:x", "!1:x", "!2:x", "!3:x", "!4:x", "!5:x"];
        let mut wanted = BTreeMap::new();
        let first = list(json!({
            "ranges": [[2, 3], [0, 0], [3, 10], [50, 60], [4, 4]],
            "required_state": [["a", ""], ["b", "*"], ["a", ""]],
            "timeline_limit": 4,
        }));
        select_ranges(&first, &rooms, &mut wanted);
        let second = list(json!({
            "ranges": [[1, 2]],
            "required_state": [["b", "*"], ["c", "$ME"]],
            "timeline_limit": 9,
        }));
        select_ranges(&second, &rooms, &mut wanted);
        let got: Vec<&str> = wanted.keys().map(String::as_str).collect();
        assert_eq!(got, rooms);
        let rules = |room: &str| {
            wanted[room]
                .required_state
                .iter()
                .map(|(t, k)| format!("{t}/{k}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(rules("!0:x"), ["a/", "b/*"]);
        assert_eq!(rules("!1:x"), ["b/*", "c/$ME"]);
        assert_eq!(rules("!2:x"), ["a/", "b/*", "c/$ME"]);
        assert_eq!(wanted["!2:x"].timeline_limit, Some(9));
        assert_eq!(wanted["!5:x"].timeline_limit, Some(4));
        let mut none = BTreeMap::new();
        select_ranges(&first, &[], &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn a_request_asking_for_too_much_required_state_is_refused() {
        let rules = |n: usize, len: usize| -> Vec<Value> {
            (0..n).map(|i| json!([format!("{i:0len$}"), ""])).collect()
        };
        let request = |rules: Vec<Value>| json!({ "lists": { "all": { "ranges": [[0, 10]], "required_state": rules } } });
        assert!(read_request(&request(rules(40, 20))).is_ok());
        for too_much in [rules(1_001, 1), rules(100, 200)] {
            let err = read_request(&request(too_much)).expect_err("refused");
            assert!(
                matches!(&err, crate::error::Error::Matrix(m) if m.errcode == crate::error::ErrorCode::InvalidParam),
                "{err:?}"
            );
        }
    }

    #[test]
    fn many_ranges_and_rules_cost_what_they_are_not_their_product() {
        // Merging once per range and room, with a scan of the room's rules for each rule, this
        // request (well under the body limit) took about 10^14 string comparisons.
        let rules: Vec<Value> = (0..10_000).map(|i| json!([format!("t{i}"), ""])).collect();
        let ranges: Vec<Value> = (0..10_000).map(|_| json!([0, u64::MAX])).collect();
        let list = list(json!({ "ranges": ranges, "required_state": rules }));
        let names: Vec<String> = (0..100).map(|i| format!("!{i}:x")).collect();
        let rooms: Vec<&str> = names.iter().map(String::as_str).collect();
        let start = std::time::Instant::now();
        let mut wanted = BTreeMap::new();
        select_ranges(&list, &rooms, &mut wanted);
        assert_eq!(wanted.len(), 100);
        assert!(
            wanted
                .values()
                .all(|params| params.required_state.len() == 10_000)
        );
        eprintln!("selected in {:?}", start.elapsed());
    }
}
