//! Rooms across servers: joining (`make_join`/`send_join`), inviting (`invite` v2),
//! transactions of PDUs (`send`), and fetching events (`event`, `get_missing_events`).

use std::collections::HashSet;

use axum::{
    Json,
    extract::State,
    http::{Method, StatusCode},
};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Signed, transport::FederationClient};
use crate::e2ee::remote::server_of;
use crate::{
    client::{AppState, Path},
    error::{Error, MatrixError, Result},
    rooms::{
        EventTemplate,
        graph::{self, RoomCtx, version_rules},
        remote::{self, Accepted},
    },
    storage::{
        accounts, events as ev_store, federation as fed_store, now_ms, state as state_store,
    },
};

fn obj_of(v: &Value) -> std::result::Result<CanonicalJsonObject, MatrixError> {
    serde_json::from_value(v.clone())
        .map_err(|e| MatrixError::bad_json(format!("Invalid PDU: {e}")))
}

fn str_field<'a>(obj: &'a CanonicalJsonObject, key: &str) -> Option<&'a str> {
    match obj.get(key) {
        Some(CanonicalJsonValue::String(s)) => Some(s),
        _ => None,
    }
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`.
pub(super) async fn make_join(
    state: State<AppState>,
    path: Path<(String, String)>,
    uri: axum::http::Uri,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    make_membership(state, path, uri, signed, "join").await
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`.
pub(super) async fn make_leave(
    state: State<AppState>,
    path: Path<(String, String)>,
    uri: axum::http::Uri,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    make_membership(state, path, uri, signed, "leave").await
}

/// A membership event template for another server's user, checked against the room now.
async fn make_membership(
    State(state): State<AppState>,
    Path((room_id, user_id)): Path<(String, String)>,
    uri: axum::http::Uri,
    signed: Signed<Value>,
    membership: &'static str,
) -> std::result::Result<Json<Value>, MatrixError> {
    if server_of(&user_id) != Some(signed.origin.as_str()) {
        return Err(MatrixError::forbidden(
            "You may only act for your own users",
        ));
    }
    let user = UserId::parse(user_id.as_str())
        .map_err(|_| MatrixError::invalid_param("Invalid user id"))?;
    // `ver` repeats once per room version the joining server supports.
    let versions = crate::client::query_values(uri.query(), "ver");
    let identity = state.identity.clone();
    let template = state
        .db
        .read(move |conn| {
            let ctx = RoomCtx::load(conn, &room_id)?;
            if !versions.is_empty() && !versions.iter().any(|v| v == ctx.version.as_str()) {
                return Err(MatrixError::new(
                    StatusCode::BAD_REQUEST,
                    "M_INCOMPATIBLE_ROOM_VERSION",
                    "Your server does not support this room's version",
                )
                .with_field("room_version", json!(ctx.version.as_str()))
                .into());
            }
            let tpl = EventTemplate::state(
                "m.room.member",
                user.as_str(),
                json!({ "membership": membership }),
            );
            let obj = graph::event_template(&ctx, &identity, &user, &tpl, now_ms())?;
            // Refuse early if the change would not be allowed now.
            let (pdu, _) = graph::sign_event(obj.clone(), &identity, &ctx.rules)?;
            graph::check_auth(conn, &ctx, &pdu)?;
            Ok((ctx.version.to_string(), obj))
        })
        .await?;
    let mut event = template.1;
    event.remove("origin");
    Ok(Json(json!({ "room_version": template.0, "event": event })))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`.
pub(super) async fn send_leave(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let obj = own_membership_event(&signed.body, &signed.origin, "leave")?;
    let (origin, local) = (
        signed.origin.clone(),
        state.identity.server_name().to_string(),
    );
    let room = room_id.clone();
    state
        .db
        .write(move |txn| {
            accept_membership(txn, &room_id, &event_id, obj, &origin, &local).map(|_| ())
        })
        .await?;
    super::own_membership::keep(&state, &room).await;
    state.notifier.notify();
    Ok(Json(json!({})))
}

/// The body of a `send_join`/`send_leave`: a member event of one of the origin's own users,
/// about themselves, with the expected membership.
fn own_membership_event(
    body: &Value,
    origin: &str,
    membership: &str,
) -> std::result::Result<CanonicalJsonObject, MatrixError> {
    let obj = obj_of(body)?;
    let sender = str_field(&obj, "sender").unwrap_or_default();
    let has_membership = matches!(obj.get("content"), Some(CanonicalJsonValue::Object(c))
        if c.get("membership") == Some(&CanonicalJsonValue::String(membership.into())));
    if server_of(sender) != Some(origin)
        || str_field(&obj, "type") != Some("m.room.member")
        || str_field(&obj, "state_key") != Some(sender)
        || !has_membership
    {
        return Err(MatrixError::bad_json(format!(
            "Not a {membership} of one of your own users"
        )));
    }
    Ok(obj)
}

/// Checks a membership event sent by `origin` and adds it to the room, then queues it for the
/// room's other servers.
fn accept_membership(
    txn: &mut crate::storage::WriteTxn<'_>,
    room_id: &str,
    event_id: &str,
    obj: CanonicalJsonObject,
    origin: &str,
    local: &str,
) -> Result<ruma::OwnedEventId> {
    let room =
        ev_store::get_room(txn, room_id)?.ok_or_else(|| MatrixError::not_found("Unknown room"))?;
    let (_, rules) = version_rules(&room.room_version)?;
    let (id, obj) = remote::verify_pdu(obj, &rules).map_err(MatrixError::forbidden)?;
    if id.as_str() != event_id {
        return Err(MatrixError::bad_json("Event id does not match the event").into());
    }
    match super::inbound::accept_and_welcome(txn, room_id, &id, &obj, &rules, local)? {
        Accepted::Stored(_) | Accepted::Known => {}
        Accepted::Rejected(why) | Accepted::SoftFailed(why) => {
            return Err(MatrixError::forbidden(format!("Not allowed: {why}")).into());
        }
        Accepted::Outlier => {
            return Err(MatrixError::forbidden("Not allowed: the event has no place here").into());
        }
        Accepted::Missing(missing) => {
            return Err(MatrixError::bad_json(format!(
                "Unknown events: auth {:?}, prev {:?}",
                missing.auth, missing.prev
            ))
            .into());
        }
    }
    fed_store::enqueue_for_room(txn, room_id, id.as_str(), local, Some(origin), now_ms())?;
    Ok(id)
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`.
pub(super) async fn send_join(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let obj = own_membership_event(&signed.body, &signed.origin, "join")?;
    let origin = signed.origin.clone();
    let local = state.identity.server_name().to_string();
    let room = room_id.clone();
    let id = state
        .db
        .write(move |txn| accept_membership(txn, &room_id, &event_id, obj, &origin, &local))
        .await?;
    super::own_membership::keep(&state, &room).await;
    // The answer is read after the commit, so the single writer is not held while it is built.
    let (r, local) = (room.clone(), state.identity.server_name().to_string());
    let response = state
        .db
        .read(move |conn| {
            // The state the joining server needs: the room's state before the join.
            let ev = ev_store::get_event(conn, id.as_str())?
                .ok_or_else(|| MatrixError::not_found("Unknown event"))?;
            let state_before = match ev.state_before {
                Some(group) => state_store::load_state_group(conn, group)?,
                None => state_store::StateMap::new(),
            };
            let state_pdus = event_values(conn, state_before.values())?;
            let chain_ids =
                graph::auth_chain(conn, state_before.values().cloned().chain([id.to_string()]))?;
            let chain = event_values(conn, chain_ids.iter())?;
            let servers = fed_store::servers_in_room(conn, &r)?;
            Ok(json!({
                "origin": local,
                "state": state_pdus,
                "auth_chain": chain,
                "event": signed.body,
                "members_omitted": false,
                "servers_in_room": servers,
            }))
        })
        .await?;
    state.notifier.notify();
    // Our members' presence goes to the new server once it has had time to store the room
    // (an EDU about users it does not know yet in a room would be dropped).
    let presence = state.presence.clone();
    state.tasks.spawn(async move {
        tokio::time::sleep(PRESENCE_AFTER_JOIN).await;
        presence.share_room(&room).await;
    });
    Ok(Json(response))
}

/// How long after serving a join the room's presence is sent to the joining server.
const PRESENCE_AFTER_JOIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The stored PDUs of `ids` (those this node has), as JSON.
fn event_values<'a>(
    conn: &rusqlite::Connection,
    ids: impl Iterator<Item = &'a String>,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(json) = ev_store::get_event_json(conn, id)? {
            out.push(serde_json::from_str::<Value>(&json)?);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
pub(super) struct InviteBody {
    room_version: String,
    event: Value,
    #[serde(default)]
    invite_room_state: Vec<Value>,
}

/// Most stripped state events an invite may carry.
const MAX_INVITE_STATE_EVENTS: usize = 50;
/// Most bytes of stripped state (as JSON) an invite may carry.
const MAX_INVITE_STATE_BYTES: usize = 64 * 1024;

/// The invite's stripped state as JSON to store, if it is small enough and made of objects.
fn invite_state_json(events: &[Value]) -> std::result::Result<String, MatrixError> {
    let too_large = |what: &str| {
        MatrixError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("invite_room_state has too many {what}"),
        )
    };
    if events.len() > MAX_INVITE_STATE_EVENTS {
        return Err(too_large("events"));
    }
    if !events.iter().all(Value::is_object) {
        return Err(MatrixError::bad_json(
            "invite_room_state must hold stripped state events",
        ));
    }
    let json = serde_json::to_string(events).map_err(|_| MatrixError::internal())?;
    if json.len() > MAX_INVITE_STATE_BYTES {
        return Err(too_large("bytes"));
    }
    Ok(json)
}

/// Checks that `obj` is an invite for `room_id`, sent by a user of `origin` to a user of
/// `local`; returns `(sender, invitee)`.
fn invite_parties(
    obj: &CanonicalJsonObject,
    room_id: &str,
    origin: &str,
    local: &str,
) -> std::result::Result<(String, String), MatrixError> {
    let is_invite = matches!(obj.get("content"), Some(CanonicalJsonValue::Object(c))
        if c.get("membership") == Some(&CanonicalJsonValue::String("invite".into())));
    if str_field(obj, "type") != Some("m.room.member") || !is_invite {
        return Err(MatrixError::bad_json("Not an invite"));
    }
    if str_field(obj, "room_id") != Some(room_id) {
        return Err(MatrixError::bad_json("The invite is for another room"));
    }
    let sender = str_field(obj, "sender").unwrap_or_default();
    if server_of(sender) != Some(origin) || UserId::parse(sender).is_err() {
        return Err(MatrixError::forbidden(
            "Invites must come from the inviter's own server",
        ));
    }
    let target = str_field(obj, "state_key").unwrap_or_default();
    if server_of(target) != Some(local) || UserId::parse(target).is_err() {
        return Err(MatrixError::forbidden("The invitee is not on this server"));
    }
    Ok((sender.to_owned(), target.to_owned()))
}

/// Most unanswered invites the users of one other server may have waiting on this node's
/// users (each carries up to 64 KiB of stripped state).
const MAX_PENDING_INVITES_PER_SERVER: usize = 100;

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: an invite for a local user from
/// another server, counter-signed only if it is an invite of an existing local user who is
/// neither in the room nor banned from it here.
pub(super) async fn invite(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed<InviteBody>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let body = signed.body;
    let (_, rules) = version_rules(&body.room_version).map_err(|_| {
        MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            "Unsupported room version",
        )
        .with_field("room_version", json!(body.room_version))
    })?;
    let invite_state = invite_state_json(&body.invite_room_state)?;
    let obj = obj_of(&body.event)?;
    let local = state.identity.server_name().to_string();
    let (sender, target) = invite_parties(&obj, &room_id, &signed.origin, &local)?;
    let (id, obj) = remote::verify_pdu(obj, &rules).map_err(MatrixError::forbidden)?;
    if id.as_str() != event_id {
        return Err(MatrixError::bad_json("Event id does not match the event"));
    }
    let ts = match obj.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(i)) => i64::from(*i),
        _ => now_ms(),
    };
    let identity = state.identity.clone();
    let origin = signed.origin.clone();
    let signed_obj = state
        .db
        .write(move |txn| {
            if accounts::get_user(txn, &target)?.is_none() {
                return Err(MatrixError::forbidden("No such user on this server").into());
            }
            let local = identity.server_name().to_string();
            if ev_store::get_event(txn, id.as_str())?.is_none()
                && fed_store::pending_invites_from(txn, &origin, &local)?
                    >= MAX_PENDING_INVITES_PER_SERVER
            {
                return Err(MatrixError::forbidden(
                    "Too many invites from your server wait for an answer here",
                )
                .into());
            }
            if let Some(m) = ev_store::membership(txn, &room_id, &target)?
                && (m.membership == "join" || m.membership == "ban")
            {
                return Err(MatrixError::forbidden(
                    "The invitee is already in the room or banned from it",
                )
                .into());
            }
            let mut signed_obj = obj;
            ruma::signatures::sign_event(
                identity.server_name().as_str(),
                identity.key_pair(),
                &mut signed_obj,
                &rules.redaction,
            )
            .map_err(|e| MatrixError::bad_json(e.to_string()))?;
            let json = serde_json::to_string(&signed_obj)?;
            if ev_store::get_event(txn, id.as_str())?.is_none() {
                let pos = txn.next_pos();
                let invite = ev_store::DetachedMember {
                    event_id: id.as_str(),
                    room_id: &room_id,
                    user_id: &target,
                    sender: &sender,
                    origin_server_ts: ts,
                    json: &json,
                };
                ev_store::insert_detached_member_event(txn, &invite, pos)?;
                ev_store::set_membership(txn, &room_id, &target, "invite", id.as_str(), pos)?;
            }
            fed_store::set_invite_state(txn, &room_id, &target, &invite_state)?;
            Ok(signed_obj)
        })
        .await?;
    state.notifier.notify();
    Ok(Json(json!({ "event": signed_obj })))
}

/// The body of `/send`.
#[derive(Deserialize)]
pub(crate) struct Transaction {
    #[serde(default)]
    pub(crate) pdus: Vec<Value>,
    #[serde(default)]
    pub(crate) edus: Vec<Value>,
}

/// Most PDUs of one transaction taken in; the rest are ignored.
pub(crate) const MAX_TRANSACTION_PDUS: usize = 50;

/// `PUT /_matrix/federation/v1/send/{txnId}`.
pub(super) async fn send_transaction(
    State(state): State<AppState>,
    Path(_txn_id): Path<String>,
    signed: Signed<Transaction>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let Transaction { pdus, edus } = signed.body;
    let pdus: Vec<Value> = pdus.into_iter().take(MAX_TRANSACTION_PDUS).collect();
    let results = super::inbound::receive(&state, &signed.origin, pdus).await;
    super::edus::receive(&state, &signed.origin, edus).await;
    state.notifier.notify();
    Ok(Json(transaction_answer(results)))
}

/// The `/send` answer: each PDU's outcome under its event id.
pub(crate) fn transaction_answer(results: Vec<super::inbound::PduResult>) -> Value {
    let mut answer = Map::new();
    for (id, outcome) in results {
        if !id.is_empty() {
            let result = match outcome {
                Ok(()) => json!({}),
                Err(why) => json!({ "error": why }),
            };
            answer.insert(id, result);
        }
    }
    json!({ "pdus": answer })
}

#[derive(Deserialize)]
pub(super) struct MissingBody {
    #[serde(default)]
    earliest_events: Vec<String>,
    latest_events: Vec<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    min_depth: Option<i64>,
}

/// Most events one `get_missing_events` answers, and most ids it takes.
const MAX_MISSING_EVENTS: usize = 100;

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`: the events before
/// `latest_events` (not those themselves), walking back through prev events until
/// `earliest_events` or `min_depth`, closest first, answered oldest first.
pub(super) async fn get_missing_events(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    signed: Signed<MissingBody>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let origin = signed.origin;
    let body = signed.body;
    let events = state
        .db
        .read(move |conn| {
            if !fed_store::server_was_in_room(conn, &room_id, &origin)? {
                return Err(MatrixError::forbidden("Your server is not in this room").into());
            }
            let limit = body.limit.unwrap_or(10).min(MAX_MISSING_EVENTS);
            let min_depth = body.min_depth.unwrap_or(0);
            let stop: HashSet<&str> = body
                .earliest_events
                .iter()
                .take(MAX_MISSING_EVENTS)
                .map(String::as_str)
                .collect();
            let mut seen: HashSet<String> = HashSet::new();
            let mut queue = std::collections::VecDeque::new();
            for id in body.latest_events.iter().take(MAX_MISSING_EVENTS) {
                if let Some(pdu) = graph::load_pdu(conn, id)? {
                    queue.extend(pdu.data.prev_events.iter().map(|e| e.to_string()));
                }
            }
            let mut out = Vec::new();
            while let Some(id) = queue.pop_front() {
                if out.len() >= limit {
                    break;
                }
                if stop.contains(id.as_str()) || !seen.insert(id.clone()) {
                    continue;
                }
                let Some(ev) = ev_store::get_event(conn, &id)?.filter(|e| e.room_id == room_id)
                else {
                    continue;
                };
                let Some(pdu) = graph::load_pdu(conn, &id)? else {
                    continue;
                };
                let depth = i64::try_from(u64::from(pdu.data.depth)).unwrap_or(i64::MAX);
                if depth < min_depth {
                    continue;
                }
                queue.extend(pdu.data.prev_events.iter().map(|e| e.to_string()));
                out.push((depth, super::state::pdu_for_server(conn, &ev, &origin)?));
            }
            out.sort_by_key(|(depth, _)| *depth);
            Ok(out.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(json!({ "events": events })))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`: the auth chain of an event.
pub(super) async fn event_auth(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let origin = signed.origin;
    let chain = state
        .db
        .read(move |conn| {
            if !fed_store::server_was_in_room(conn, &room_id, &origin)? {
                return Err(MatrixError::forbidden("Your server is not in this room").into());
            }
            ev_store::get_event(conn, &event_id)?
                .filter(|e| e.room_id == room_id)
                .ok_or_else(|| MatrixError::not_found("Unknown event in this room"))?;
            let ids = graph::auth_chain(conn, [event_id])?;
            event_values(conn, ids.iter())
        })
        .await?;
    Ok(Json(json!({ "auth_chain": chain })))
}

/// `GET /_matrix/federation/v1/event/{eventId}`: the event as the asking server may see it.
pub(super) async fn get_event(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let origin = signed.origin;
    let local = state.identity.server_name().to_string();
    let pdu = state
        .db
        .read(move |conn| {
            let ev = ev_store::get_event(conn, &event_id)?
                .ok_or_else(|| MatrixError::not_found("Unknown event"))?;
            if !fed_store::server_was_in_room(conn, &ev.room_id, &origin)? {
                return Err(MatrixError::forbidden("Your server is not in this room").into());
            }
            // Whole or redacted, as the room's history visibility at the event allows.
            super::state::pdu_for_server(conn, &ev, &origin)
        })
        .await?;
    Ok(Json(
        json!({ "origin": local, "origin_server_ts": now_ms(), "pdus": [pdu] }),
    ))
}

// ----- The local side: joining and inviting across servers -----

/// Joins a local user to a room that lives on other servers, trying each of `via`.
pub async fn join_remote(
    state: &AppState,
    user: &UserId,
    room_id: &str,
    via: &[String],
) -> Result<()> {
    let client = state.federation().cloned().ok_or_else(|| {
        MatrixError::not_found("Room not found, and peer-to-peer networking is off")
    })?;
    let local = state.identity.server_name().to_string();
    let mut servers: Vec<String> = Vec::new();
    for server in via {
        if *server != local && !servers.contains(server) {
            servers.push(server.clone());
        }
    }
    // Back into a room this node knows: the servers it last saw in it are fallbacks, for
    // when those named are unreachable or behind.
    let rid = room_id.to_owned();
    let known = state
        .db
        .read(move |c| fed_store::servers_in_room(c, &rid))
        .await
        .unwrap_or_default();
    for server in known {
        if servers.len() >= MAX_JOIN_SERVERS {
            break;
        }
        if server != local && !servers.contains(&server) {
            servers.push(server);
        }
    }
    let mut last_error = String::from("no server to join through");
    // The first server whose template kept missing the user's latest membership event:
    // joined through at the end if no server is up to date.
    let mut behind = None;
    for server in &servers {
        match join_through(state, &client, user, room_id, server, false).await {
            Ok(()) => return joined(state, room_id).await,
            Err(JoinFailure::Behind) => {
                tracing::info!(%server, "join template misses our latest membership; trying another server");
                behind.get_or_insert(server);
            }
            Err(JoinFailure::Error(e)) => {
                tracing::info!(%server, error = %e, "remote join failed");
                last_error = e.to_string();
            }
        }
    }
    if let Some(server) = behind {
        match join_through(state, &client, user, room_id, server, true).await {
            Ok(()) => return joined(state, room_id).await,
            Err(JoinFailure::Error(e)) => last_error = e.to_string(),
            Err(JoinFailure::Behind) => {}
        }
    }
    Err(MatrixError::not_found(format!("Could not join the room: {last_error}")).into())
}

/// After a remote join: the room's state, resolved over the join and what this node had of
/// the room, may not have the user joined (a rejoin made on a server that had not seen the
/// user's leave races that leave, and may lose to it). The node then joins again on its own
/// graph, which now holds both, so the new join comes after the leave everywhere
/// ([`super::own_membership`]).
async fn joined(state: &AppState, room_id: &str) -> Result<()> {
    super::own_membership::keep_after_join(state, room_id).await;
    state.presence.share_room(room_id).await;
    Ok(())
}

/// Most servers one join tries.
const MAX_JOIN_SERVERS: usize = 6;

/// Why a join through one server did not happen.
enum JoinFailure {
    /// Its template did not build on the user's latest membership event, even after it was
    /// handed that event.
    Behind,
    /// Anything else.
    Error(Error),
}

impl<E: Into<Error>> From<E> for JoinFailure {
    fn from(e: E) -> Self {
        JoinFailure::Error(e.into())
    }
}

/// How often a join asks again for a template that does not build on the user's latest
/// membership event, and the pause before the first retry (longer by as much each time).
const STALE_TEMPLATE_RETRIES: u32 = 4;
const STALE_TEMPLATE_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// Joins through `server`. Unless `take_behind`, a server whose template stays behind the
/// user's latest membership event is given up on ([`JoinFailure::Behind`]).
async fn join_through(
    state: &AppState,
    client: &FederationClient,
    user: &UserId,
    room_id: &str,
    server: &str,
    take_behind: bool,
) -> std::result::Result<(), JoinFailure> {
    let versions: String = graph::SUPPORTED_VERSIONS
        .iter()
        .map(|v| format!("ver={v}&"))
        .collect();
    let path = format!(
        "/_matrix/federation/v1/make_join/{}/{}?{}",
        crate::client::percent_encode(room_id),
        crate::client::percent_encode(user.as_str()),
        versions.trim_end_matches('&'),
    );
    // Our user's latest membership event here (a leave, or the invite), if any: a template
    // that does not build on it comes from a server that has not seen it yet, and a join
    // made on it would race that event in state resolution, and may lose to it.
    let (r, u) = (room_id.to_owned(), user.to_string());
    let ours = state
        .db
        .read(move |c| {
            let Some(m) = ev_store::membership(c, &r, &u)? else {
                return Ok(None);
            };
            Ok(ev_store::get_event_json(c, &m.event_id)?.map(|json| (m.event_id, json)))
        })
        .await?;
    let mut attempt = 0;
    let template = loop {
        let resp = client.request(server, Method::GET, &path, None).await?;
        if resp.status != StatusCode::OK {
            return Err(Error::Network(format!("make_join: {} {}", resp.status, resp.body)).into());
        }
        let template = obj_of(&resp.body["event"])?;
        let Some((member_id, member_json)) = &ours else {
            break (resp, template);
        };
        let builds_on_it = matches!(template.get("auth_events"),
            Some(CanonicalJsonValue::Array(ids)) if ids.iter().any(|i| i.as_str() == Some(member_id)));
        if builds_on_it || take_behind {
            break (resp, template);
        }
        if attempt >= STALE_TEMPLATE_RETRIES {
            return Err(JoinFailure::Behind);
        }
        // Hand the server our membership event (it fetches what that depends on from us),
        // give it a moment, and ask again.
        attempt += 1;
        let pdu: Value = serde_json::from_str(member_json)?;
        let body = json!({
            "origin": state.identity.server_name().as_str(),
            "origin_server_ts": now_ms(),
            "pdus": [pdu],
        });
        let txn_path = format!("/_matrix/federation/v1/send/join{}_{}", now_ms(), attempt);
        let _ = client
            .request(server, Method::PUT, &txn_path, Some(body))
            .await;
        tokio::time::sleep(STALE_TEMPLATE_PAUSE * attempt).await;
    };
    let (resp, template) = template;
    let version = resp.body["room_version"].as_str().unwrap_or("").to_owned();
    let (_, rules) = version_rules(&version)?;
    // Rebuild everything that says who joins and how; keep only the graph position.
    let uid = user.to_string();
    let profile = state
        .db
        .read(move |c| accounts::get_profile(c, &uid))
        .await?;
    let event = join_from_template(
        &template,
        room_id,
        user,
        profile.unwrap_or_default(),
        state.identity.server_name().as_str(),
        &rules,
    )?;
    let (pdu, signed) = graph::sign_event(event, &state.identity, &rules)?;
    let path = format!(
        "/_matrix/federation/v2/send_join/{}/{}",
        crate::client::percent_encode(room_id),
        crate::client::percent_encode(pdu.event_id.as_str()),
    );
    let body = serde_json::to_value(&signed)?;
    let resp = client
        .request(server, Method::PUT, &path, Some(body))
        .await?;
    if resp.status != StatusCode::OK {
        return Err(Error::Network(format!("send_join: {} {}", resp.status, resp.body)).into());
    }
    let state_pdus = resp.body["state"].as_array().cloned().unwrap_or_default();
    let chain = resp.body["auth_chain"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let room = room_id.to_owned();
    let join_id = pdu.event_id.clone();
    let our_join = join_id.to_string();
    let joined = state
        .db
        .write(move |txn| {
            // Store the auth chain and state, oldest dependencies first where we can.
            let mut state_map = state_store::StateMap::new();
            if ev_store::get_room(txn, &room)?.is_none() {
                ev_store::insert_room(txn, &room, &version, "")?;
            }
            // Each state event is verified once; one that does not verify fails the join.
            let mut state_events = Vec::new();
            for ev in &state_pdus {
                let obj = obj_of(ev)?;
                state_events.push(remote::verify_pdu(obj, &rules).map_err(Error::Event)?);
            }
            let mut everything: Vec<_> = chain
                .into_iter()
                .filter_map(|p| super::inbound::verified(p, &room, &rules))
                .collect();
            everything.extend(
                state_events
                    .iter()
                    .filter(|(id, obj)| super::inbound::belongs_to(id, obj, &room))
                    .cloned(),
            );
            super::inbound::store_outliers_in(txn, &room, everything)?;
            for (id, obj) in &state_events {
                // Only state that passed its own auth checks counts.
                if ev_store::get_event(txn, id.as_str())?.is_none_or(|e| e.rejected) {
                    continue;
                }
                if let (Some(ty), Some(key)) = (str_field(obj, "type"), str_field(obj, "state_key"))
                {
                    state_map.insert((ty.to_owned(), key.to_owned()), id.to_string());
                }
            }
            check_join_state(txn, &state_events, &state_map, &pdu)?;
            let group = state_store::create_state_group(txn, &room, None, &state_map)?;
            // The state before our join is the resident server's answer (each event's signatures
            // were checked above); our join is then checked against it like any event.
            for ((ty, key), id) in &state_map {
                state_store::set_current_state(txn, &room, ty, key, id)?;
            }
            ev_store::set_room_state_group(txn, &room, group)?;
            // Memberships of everyone already in the room.
            let pos = txn.next_pos();
            for ((ty, key), id) in &state_map {
                if ty == "m.room.member"
                    && let Some(json) = ev_store::get_event_json(txn, id)?
                {
                    let v: Value = serde_json::from_str(&json)?;
                    let m = v
                        .pointer("/content/membership")
                        .and_then(Value::as_str)
                        .unwrap_or("leave");
                    ev_store::set_membership(txn, &room, key, m, id, pos)?;
                }
            }
            let mut ctx = RoomCtx::load(txn, &room)?;
            // What this node had of the room before (when it was in it once already).
            let earlier = ctx.prevs.clone();
            ctx.depth = i64::try_from(u64::from(pdu.data.depth)).unwrap_or(i64::MAX);
            graph::check_auth(txn, &ctx, &pdu)?;
            let appended = graph::persist_event(txn, &mut ctx, &pdu, &signed, None)?;
            // Back in a room this node knew: what it had that the resident's state does not
            // cover stays a forward extremity, and the current state is resolved over all of
            // them, as every other server will resolve it once it has both sides.
            if !earlier.is_empty() {
                remote::update_current_state(txn, &room, &rules, appended.stream)?;
            }
            Ok(earlier)
        })
        .await;
    let earlier = joined?;
    state.notifier.notify();
    // Back in a room this node left: fetch what happened while it was away.
    if !earlier.is_empty() {
        super::inbound::fill_gap(state, client, server, room_id, earlier, &our_join).await;
    }
    Ok(())
}

/// Checks that a `send_join` answer's state is the one the join was built on, before it
/// replaces anything: one event per `(type, state_key)`, a create event, and every auth event
/// the join cites present, unrejected, and the state's event for its key. A resident that
/// swaps the power levels or drops a member's event fails here (the join cites what the
/// resident's template said the state was).
fn check_join_state(
    conn: &rusqlite::Connection,
    state_events: &[(ruma::OwnedEventId, CanonicalJsonObject)],
    state_map: &state_store::StateMap,
    join: &crate::rooms::pdu::Pdu,
) -> Result<()> {
    let refuse = |why: String| Err(Error::Network(format!("send_join answer refused: {why}")));
    let mut keys = HashSet::new();
    for (_, obj) in state_events {
        if let (Some(ty), Some(key)) = (str_field(obj, "type"), str_field(obj, "state_key"))
            && !keys.insert((ty, key))
        {
            return refuse(format!("the state lists ({ty}, {key:?}) twice"));
        }
    }
    if !state_map.contains_key(&("m.room.create".to_owned(), String::new())) {
        return refuse("the state has no create event".to_owned());
    }
    for id in &join.data.auth_events {
        let Some(ev) = ev_store::get_event(conn, id.as_str())? else {
            return refuse(format!("the join cites {id}, which the answer lacks"));
        };
        if ev.rejected {
            return refuse(format!("the join cites {id}, which fails the auth rules"));
        }
        if let Some(key) = &ev.state_key
            && state_map.get(&(ev.event_type.clone(), key.clone())) != Some(&ev.event_id)
        {
            return refuse(format!(
                "the state's ({}, {key:?}) is not {id}, which the join cites",
                ev.event_type
            ));
        }
    }
    Ok(())
}

/// What the invitee's server made of an invite.
enum InviteAnswer {
    /// It counter-signed the invite: the invitee sees it.
    Accepted,
    /// It refused it for good (a 4xx answer, or a signed event that is not ours).
    Refused(String),
    /// It could not be reached, or asked us to come back later.
    Unreachable(String),
}

/// Sends an invite event to the invitee's server (`PUT /_matrix/federation/v2/invite`).
async fn send_invite(
    client: &FederationClient,
    server: &str,
    room_id: &str,
    version: &str,
    event: CanonicalJsonObject,
    event_id: &str,
    invite_state: Vec<Value>,
) -> InviteAnswer {
    if crate::identity::peer_id_for_server_name(server).is_none() {
        return InviteAnswer::Refused(format!("{server} is not a server this node can reach"));
    }
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        crate::client::percent_encode(room_id),
        crate::client::percent_encode(event_id),
    );
    let body =
        json!({ "room_version": version, "event": event, "invite_room_state": invite_state });
    let resp = match client.request(server, Method::PUT, &path, Some(body)).await {
        Ok(resp) => resp,
        Err(e) => return InviteAnswer::Unreachable(e.to_string()),
    };
    if resp.status == StatusCode::TOO_MANY_REQUESTS || resp.status.is_server_error() {
        return InviteAnswer::Unreachable(format!("{} {}", resp.status, resp.body));
    }
    if resp.status != StatusCode::OK {
        let why = resp.body["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| resp.status.to_string());
        return InviteAnswer::Refused(why);
    }
    let same_event = obj_of(&resp.body["event"]).ok().and_then(|signed| {
        let (_, rules) = version_rules(version).ok()?;
        let (id, _) = remote::verify_pdu(signed, &rules).ok()?;
        Some(id.as_str() == event_id)
    });
    if same_event == Some(true) {
        InviteAnswer::Accepted
    } else {
        InviteAnswer::Refused("the invitee's server answered with another event".into())
    }
}

/// Sends one queued invite to its invitee's server and settles it: an accepted invite leaves
/// the queue; a refused one leaves it too, and the inviter withdraws the invite in the room
/// (a leave for the invitee with the refusal as its reason) so the room does not show an
/// invite nobody will ever see. Returns false if the server could not be reached (the invite
/// stays queued and is tried again with the destination's other traffic).
pub(super) async fn deliver_invite(
    services: &crate::services::Services,
    client: &FederationClient,
    server: &str,
    queued: &fed_store::QueuedInvite,
) -> bool {
    let (room, event_id) = (queued.room_id.clone(), queued.event_id.clone());
    let prepared = services
        .db
        .read(move |conn| {
            let Some(ev) = ev_store::get_event(conn, &event_id)? else {
                return Ok(None);
            };
            let invitee = ev.state_key.clone().unwrap_or_default();
            // Only the invitee's current membership is worth sending: one that was withdrawn,
            // accepted or replaced since is not.
            if ev_store::membership(conn, &room, &invitee)?
                .is_none_or(|m| m.event_id != event_id || m.membership != "invite")
            {
                return Ok(None);
            }
            let ctx = RoomCtx::load(conn, &room)?;
            let mut stripped = Vec::new();
            for ty in crate::sync::INVITE_STATE {
                if let Some(id) = ctx.state_event(ty, "")
                    && let Some(state_ev) = ev_store::get_event(conn, id)?
                {
                    stripped.push(crate::rooms::format::stripped_state(&state_ev)?);
                }
            }
            if let Some(id) = ctx.state_event("m.room.member", &ev.sender)
                && let Some(state_ev) = ev_store::get_event(conn, id)?
            {
                stripped.push(crate::rooms::format::stripped_state(&state_ev)?);
            }
            let obj: CanonicalJsonObject = serde_json::from_str(&ev.json)?;
            Ok(Some((obj, ctx.version.to_string(), stripped)))
        })
        .await;
    let answer = match prepared {
        Ok(Some((obj, version, stripped))) => {
            send_invite(
                client,
                server,
                &queued.room_id,
                &version,
                obj,
                &queued.event_id,
                stripped,
            )
            .await
        }
        // Nothing left to send.
        Ok(None) => InviteAnswer::Accepted,
        Err(e) => InviteAnswer::Unreachable(e.to_string()),
    };
    let refusal = match answer {
        InviteAnswer::Unreachable(why) => {
            tracing::debug!(%server, room = %queued.room_id, %why, "invite not delivered yet");
            return false;
        }
        InviteAnswer::Accepted => None,
        InviteAnswer::Refused(why) => {
            tracing::info!(%server, room = %queued.room_id, %why, "invite refused");
            Some(why)
        }
    };
    let identity = services.identity.clone();
    let queued = queued.clone();
    let settled = services
        .db
        .write(move |txn| {
            fed_store::delete_invite(txn, queued.id)?;
            if let Some(why) = refusal {
                let reason = format!("The invitee's server refused the invite: {why}");
                // An inviter who may no longer withdraw it (left, lost power) leaves the invite
                // standing: it is still the room's truth, only never seen by the invitee.
                if !crate::rooms::membership::withdraw_invite(
                    txn,
                    &identity,
                    &queued.room_id,
                    &queued.event_id,
                    &reason,
                )? {
                    tracing::info!(room = %queued.room_id, "refused invite stays");
                }
            }
            Ok(())
        })
        .await;
    services.notifier.notify();
    settled.is_ok()
}

/// Declines an invite to a room this server does not take part in: `make_leave` and
/// `send_leave` through the inviter's server, then the leave is recorded here.
pub async fn reject_remote_invite(state: &AppState, user: &UserId, room_id: &str) -> Result<()> {
    let client = state.federation().cloned();
    let via = join_candidates(state, room_id, user.as_str()).await?;
    let mut leave: Option<(String, String, i64)> = None;
    if let Some(client) = client {
        for server in &via {
            match leave_through(state, &client, user, room_id, server).await {
                Ok(done) => {
                    leave = Some(done);
                    break;
                }
                Err(e) => tracing::info!(%server, error = %e, "remote leave failed"),
            }
        }
    }
    // Unreachable inviters cannot hold the user in the invite: record the refusal here anyway,
    // with our own leave if it was made.
    let (r, u) = (room_id.to_owned(), user.to_string());
    state
        .db
        .write(move |txn| {
            let pos = txn.next_pos();
            let event_id = match leave {
                Some((id, json, ts)) => {
                    let leave = ev_store::DetachedMember {
                        event_id: &id,
                        room_id: &r,
                        user_id: &u,
                        sender: &u,
                        origin_server_ts: ts,
                        json: &json,
                    };
                    ev_store::insert_detached_member_event(txn, &leave, pos)?;
                    id
                }
                None => ev_store::membership(txn, &r, &u)?
                    .map(|m| m.event_id)
                    .unwrap_or_default(),
            };
            ev_store::set_membership(txn, &r, &u, "leave", &event_id, pos)?;
            Ok(())
        })
        .await?;
    state.notifier.notify();
    Ok(())
}

async fn leave_through(
    state: &AppState,
    client: &FederationClient,
    user: &UserId,
    room_id: &str,
    server: &str,
) -> Result<(String, String, i64)> {
    let path = format!(
        "/_matrix/federation/v1/make_leave/{}/{}",
        crate::client::percent_encode(room_id),
        crate::client::percent_encode(user.as_str()),
    );
    let resp = client.request(server, Method::GET, &path, None).await?;
    if resp.status != StatusCode::OK {
        return Err(Error::Network(format!(
            "make_leave: {} {}",
            resp.status, resp.body
        )));
    }
    let version = resp.body["room_version"].as_str().unwrap_or("").to_owned();
    let (_, rules) = version_rules(&version)?;
    let template = obj_of(&resp.body["event"])?;
    let event = membership_from_template(
        &template,
        room_id,
        user,
        "leave",
        (None, None),
        state.identity.server_name().as_str(),
        &rules,
    )?;
    let (pdu, signed) = graph::sign_event(event, &state.identity, &rules)?;
    let path = format!(
        "/_matrix/federation/v2/send_leave/{}/{}",
        crate::client::percent_encode(room_id),
        crate::client::percent_encode(pdu.event_id.as_str()),
    );
    let resp = client
        .request(
            server,
            Method::PUT,
            &path,
            Some(serde_json::to_value(&signed)?),
        )
        .await?;
    if resp.status != StatusCode::OK {
        return Err(Error::Network(format!(
            "send_leave: {} {}",
            resp.status, resp.body
        )));
    }
    let ts = i64::from(pdu.data.origin_server_ts.get());
    Ok((
        pdu.event_id.to_string(),
        serde_json::to_string(&signed)?,
        ts,
    ))
}

/// Whether this server takes part in the room now (some local user is joined), so local
/// membership changes can be made here without asking another server.
pub async fn is_resident(state: &AppState, room_id: &str) -> Result<bool> {
    let (r, local) = (room_id.to_owned(), state.identity.server_name().to_string());
    state
        .db
        .read(move |c| {
            if ev_store::get_room(c, &r)?.is_none() {
                return Ok(false);
            }
            let servers = fed_store::servers_in_room(c, &r)?;
            Ok(servers.is_empty() || servers.contains(&local))
        })
        .await
}

/// Servers that may let `user` join: the inviter's, then those already in the room.
pub async fn join_candidates(state: &AppState, room_id: &str, user: &str) -> Result<Vec<String>> {
    let (r, u) = (room_id.to_owned(), user.to_owned());
    state
        .db
        .read(move |c| {
            let mut out = Vec::new();
            if let Some(m) = ev_store::membership(c, &r, &u)?
                && m.membership == "invite"
                && let Some(ev) = ev_store::get_event(c, &m.event_id)?
                && let Some(server) = server_of(&ev.sender)
            {
                out.push(server.to_owned());
            }
            out.extend(fed_store::servers_in_room(c, &r)?);
            Ok(out)
        })
        .await
}

/// Our join event from a resident server's `make_join` template: only the graph position
/// (room id, prev and auth events, depth) is taken from the template; who joins, how, and
/// from where are rebuilt here, so a forged template cannot make us sign something else.
pub fn join_from_template(
    template: &CanonicalJsonObject,
    room_id: &str,
    user: &UserId,
    profile: (Option<String>, Option<String>),
    origin: &str,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<CanonicalJsonObject> {
    membership_from_template(template, room_id, user, "join", profile, origin, rules)
}

/// Like [`join_from_template`], for any membership this server's user takes for themselves.
pub fn membership_from_template(
    template: &CanonicalJsonObject,
    room_id: &str,
    user: &UserId,
    membership: &str,
    profile: (Option<String>, Option<String>),
    origin: &str,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<CanonicalJsonObject> {
    let mut content = CanonicalJsonObject::new();
    content.insert(
        "membership".into(),
        CanonicalJsonValue::String(membership.into()),
    );
    if let Some(n) = profile.0 {
        content.insert("displayname".into(), CanonicalJsonValue::String(n));
    }
    if let Some(a) = profile.1 {
        content.insert("avatar_url".into(), CanonicalJsonValue::String(a));
    }
    let mut event = CanonicalJsonObject::new();
    for key in ["room_id", "prev_events", "auth_events", "depth"] {
        if let Some(v) = template.get(key) {
            event.insert(key.into(), v.clone());
        }
    }
    if str_field(&event, "room_id") != Some(room_id) {
        return Err(Error::Network("make_join answered for another room".into()));
    }
    event.insert(
        "type".into(),
        CanonicalJsonValue::String("m.room.member".into()),
    );
    event.insert(
        "sender".into(),
        CanonicalJsonValue::String(user.to_string()),
    );
    event.insert(
        "state_key".into(),
        CanonicalJsonValue::String(user.to_string()),
    );
    event.insert("content".into(), CanonicalJsonValue::Object(content));
    event.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(
            now_ms()
                .try_into()
                .map_err(|_| Error::Event("time".into()))?,
        ),
    );
    if !rules.authorization.use_room_create_sender {
        event.insert(
            "origin".into(),
            CanonicalJsonValue::String(origin.to_owned()),
        );
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_state_is_capped_in_events_and_bytes() {
        let small = json!({ "type": "m.room.name", "state_key": "", "content": { "name": "n" } });
        assert!(invite_state_json(&vec![small.clone(); MAX_INVITE_STATE_EVENTS]).is_ok());
        let too_many = invite_state_json(&vec![small; MAX_INVITE_STATE_EVENTS + 1]).unwrap_err();
        assert_eq!(too_many.errcode, "M_TOO_LARGE");
        let big = json!({ "type": "m.room.topic", "content": { "topic": "x".repeat(MAX_INVITE_STATE_BYTES) } });
        assert_eq!(
            invite_state_json(&[big]).unwrap_err().errcode,
            "M_TOO_LARGE"
        );
        assert_eq!(
            invite_state_json(&[json!("x")]).unwrap_err().errcode,
            "M_BAD_JSON"
        );
    }

    #[test]
    fn only_invites_between_the_right_servers_pass() {
        let event = |membership: &str, room: &str, sender: &str, target: &str| {
            serde_json::from_value::<CanonicalJsonObject>(json!({
                "type": "m.room.member", "room_id": room, "sender": sender,
                "state_key": target, "content": { "membership": membership },
            }))
            .unwrap()
        };
        let ok = event("invite", "!r", "@m:evil", "@b:local");
        assert!(invite_parties(&ok, "!r", "evil", "local").is_ok());
        for membership in ["join", "ban", "leave"] {
            let e = event(membership, "!r", "@m:evil", "@b:local");
            assert_eq!(
                invite_parties(&e, "!r", "evil", "local")
                    .unwrap_err()
                    .errcode,
                "M_BAD_JSON"
            );
        }
        assert!(invite_parties(&ok, "!other", "evil", "local").is_err());
        assert!(invite_parties(&ok, "!r", "other", "local").is_err());
        assert!(invite_parties(&ok, "!r", "evil", "other").is_err());
    }

    #[test]
    fn a_forged_join_template_cannot_change_who_joins_or_how() {
        let rules = ruma::RoomVersionId::V12.rules().unwrap();
        let forged: CanonicalJsonObject = serde_json::from_value(json!({
            "room_id": "!room",
            "type": "m.room.power_levels",
            "sender": "@mallory:evil",
            "state_key": "@mallory:evil",
            "content": { "membership": "ban", "users": { "@mallory:evil": 100 } },
            "origin": "evil",
            "prev_events": ["$p"],
            "auth_events": ["$a"],
            "depth": 7,
            "redacts": "$x",
        }))
        .unwrap();
        let user = UserId::parse("@bob:b").unwrap();
        let event = join_from_template(
            &forged,
            "!room",
            &user,
            (Some("Bob".into()), None),
            "b",
            &rules,
        )
        .unwrap();
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["type"], "m.room.member");
        assert_eq!(v["sender"], "@bob:b");
        assert_eq!(v["state_key"], "@bob:b");
        assert_eq!(
            v["content"],
            json!({ "membership": "join", "displayname": "Bob" })
        );
        assert!(v.get("origin").is_none() && v.get("redacts").is_none());
        assert_eq!(v["prev_events"], json!(["$p"]));
        assert_eq!(v["depth"], 7);
        // A template for another room is refused outright.
        assert!(join_from_template(&forged, "!other", &user, (None, None), "b", &rules).is_err());
    }
}
