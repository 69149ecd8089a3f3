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
//!
//! This module holds the service, the long-poll and the outline of a response; the request
//! is read in [`request`], the lists in [`lists`], each room in [`room`] and the extensions
//! in [`extensions`].

mod extensions;
mod lists;
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

use lists::Candidate;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use lists::select_ranges;
pub use request::{Extensions, ListFilters, ListRequest, Request, RoomParams};
pub(crate) use request::{apply_sticky, read_request};

use crate::{
    e2ee::sync::device_list_delta,
    error::{ErrorCode, MatrixError, Result},
    notifier::Notifier,
    storage::{
        Db, events as ev_store, now_ms,
        sliding_sync::{self as store, ConnKey, Position},
        state as state_store, to_device,
    },
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

/// Builds a whole response as of `now_pos`, phase by phase: the rooms the lists choose from,
/// the rooms the client wants, the rooms to send, and the extensions.
fn build(conn: &Connection, ctx: &Ctx, now_pos: i64, typing: &Typing) -> Result<Built> {
    let user = ctx.user.as_str();
    let since = ctx.since.map(|(_, p)| p);
    let known: HashMap<String, i64> = if since.is_some() {
        store::known_rooms(conn, ctx.key())?
    } else {
        HashMap::new()
    };
    let direct = lists::direct_rooms(conn, user)?;
    let (candidates, memberships_changed) = lists::candidates(conn, user, since, &known, &direct)?;
    let by_room: HashMap<&str, &Candidate> = candidates
        .iter()
        .map(|c| (c.membership.room_id.as_str(), c))
        .collect();
    let (wanted, lists) = lists::wanted(conn, ctx, &candidates, &by_room)?;

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
    let held = Held {
        known: &known,
        changed: &changed,
        by_room: &by_room,
        direct: &direct,
    };
    let sent = rooms_to_send(conn, ctx, now_pos, &held, &wanted)?;

    let view = extensions::View {
        wanted: &wanted,
        initial_rooms: &sent.initial_rooms,
        changed: &changed,
        typing_changed: &typing_changed,
    };
    let (extensions, ext_news) = extensions::build(conn, ctx, now_pos, typing, &view)?;

    let has_news = !sent.rooms.is_empty() || ext_news || memberships_changed;
    Ok(Built {
        body: json!({ "lists": lists, "rooms": sent.rooms, "extensions": extensions }),
        rooms_sent: sent.rooms_sent,
        has_news,
    })
}

/// What the connection holds and what changed since, for deciding which rooms to send.
struct Held<'a> {
    /// Rooms the connection holds, and the position it holds each up to.
    known: &'a HashMap<String, i64>,
    /// Rooms with changes since the last response.
    changed: &'a BTreeSet<String>,
    /// The rooms the lists choose from.
    by_room: &'a HashMap<&'a str, &'a Candidate>,
    /// Rooms `m.direct` names as direct chats.
    direct: &'a BTreeSet<String>,
}

/// The rooms part of a response.
struct SentRooms {
    /// Room bodies by room id.
    rooms: Map<String, Value>,
    /// Each room sent, with the position it is now up to date to.
    rooms_sent: Vec<(String, i64)>,
    /// Rooms sent whole (new to the connection).
    initial_rooms: BTreeSet<String>,
}

/// The wanted rooms to send: new to the connection, or with new events since the client last
/// got them.
fn rooms_to_send(
    conn: &Connection,
    ctx: &Ctx,
    now_pos: i64,
    held: &Held<'_>,
    wanted: &BTreeMap<String, RoomParams>,
) -> Result<SentRooms> {
    let user = ctx.user.as_str();
    let mut rooms = Map::new();
    let mut rooms_sent = Vec::new();
    let mut initial_rooms = BTreeSet::new();
    let now = now_ms();
    for (room_id, params) in wanted {
        let membership = match held.by_room.get(room_id.as_str()) {
            Some(c) => c.membership.clone(),
            None => match ev_store::membership(conn, room_id, user)? {
                Some(m) => m,
                None => continue,
            },
        };
        // A join is new to the client even where it held the room before (an invite, an
        // earlier membership): it gets the room whole.
        let known_upto = held
            .known
            .get(room_id)
            .copied()
            .filter(|upto| !(membership.membership == "join" && membership.stream > *upto));
        if let Some(upto) = known_upto {
            let new_events = held.changed.contains(room_id)
                && ev_store::count_room_events_between(conn, room_id, upto, now_pos)? > 0;
            // A read receipt of the user's own resets the room's unread counts: the client
            // learns the new counts from the room itself.
            let own_receipt = !new_events
                && held.changed.contains(room_id)
                && store::own_receipt_between(conn, room_id, user, upto, now_pos)?;
            if !new_events && !own_receipt && membership.stream <= upto {
                continue;
            }
        } else {
            initial_rooms.insert(room_id.clone());
        }
        let bump_stamp = held
            .by_room
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
            held.by_room
                .get(room_id.as_str())
                .map_or(held.direct.contains(room_id), |c| c.is_dm),
        )?;
        rooms.insert(room_id.clone(), body);
        rooms_sent.push((room_id.clone(), now_pos));
    }
    Ok(SentRooms {
        rooms,
        rooms_sent,
        initial_rooms,
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
