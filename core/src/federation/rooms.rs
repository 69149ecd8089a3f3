//! Rooms across servers, as other servers ask: joining (`make_join`/`send_join`), leaving,
//! being invited (`invite` v2),
//! transactions of PDUs (`send`), and fetching events (`event`, `get_missing_events`).
//!
//! About 570 lines of code, then its tests.

use std::collections::HashSet;

use axum::{Json, extract::State, http::StatusCode};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Signed;
use crate::e2ee::remote::server_of;
use crate::{
    error::{ErrorCode, MatrixError, Result},
    http::{AppState, Path, query_values},
    rooms::{
        EventTemplate,
        graph::{self, RoomCtx, version_rules},
        remote::{self, Accepted},
    },
    storage::{
        accounts, events as ev_store, federation as fed_store, now_ms, state as state_store,
    },
};

pub(super) fn obj_of(v: &Value) -> std::result::Result<CanonicalJsonObject, MatrixError> {
    serde_json::from_value(v.clone())
        .map_err(|e| MatrixError::bad_json(format!("Invalid PDU: {e}")))
}

pub(super) fn str_field<'a>(obj: &'a CanonicalJsonObject, key: &str) -> Option<&'a str> {
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
    let versions = query_values(uri.query(), "ver");
    let identity = state.identity.clone();
    let template = state
        .db
        .read(move |conn| {
            let ctx = RoomCtx::load(conn, &room_id)?;
            if !versions.is_empty() && !versions.iter().any(|v| v == ctx.version.as_str()) {
                return Err(MatrixError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::IncompatibleRoomVersion,
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
    // Our members' presence goes to the new server (which holds it back until it has stored
    // the room from this answer, see `super::joining`).
    state.presence.share_room(&room).await;
    Ok(Json(response))
}

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
            ErrorCode::TooLarge,
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
            ErrorCode::IncompatibleRoomVersion,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_state_is_capped_in_events_and_bytes() {
        let small = json!({ "type": "m.room.name", "state_key": "", "content": { "name": "n" } });
        assert!(invite_state_json(&vec![small.clone(); MAX_INVITE_STATE_EVENTS]).is_ok());
        let too_many = invite_state_json(&vec![small; MAX_INVITE_STATE_EVENTS + 1]).unwrap_err();
        assert_eq!(too_many.errcode, ErrorCode::TooLarge);
        let big = json!({ "type": "m.room.topic", "content": { "topic": "x".repeat(MAX_INVITE_STATE_BYTES) } });
        assert_eq!(
            invite_state_json(&[big]).unwrap_err().errcode,
            ErrorCode::TooLarge
        );
        assert_eq!(
            invite_state_json(&[json!("x")]).unwrap_err().errcode,
            ErrorCode::BadJson
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
                ErrorCode::BadJson
            );
        }
        assert!(invite_parties(&ok, "!other", "evil", "local").is_err());
        assert!(invite_parties(&ok, "!r", "other", "local").is_err());
        assert!(invite_parties(&ok, "!r", "evil", "other").is_err());
    }
}
