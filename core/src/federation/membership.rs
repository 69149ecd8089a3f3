//! The local side of rooms across servers: joining through another server (`make_join`,
//! `send_join`, and a second join when state resolution undoes the first), leaving through
//! one, inviting users of other servers and rejecting their invites.
//!
//! Over 600 lines (about 720 of code): each operation here is a short sequence of calls to
//! other servers with its own failure handling, and they share the template and candidate
//! helpers; splitting joins from invites would spread those helpers over two files.

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, UserId};
use serde_json::{Value, json};

use super::{
    joining::JoinUnderWay,
    rooms::{obj_of, str_field},
    transport::FederationClient,
};
use crate::{
    e2ee::remote::server_of,
    error::{Error, MatrixError, Result},
    http::{AppState, percent_encode, query_string},
    rooms::{
        graph::{self, RoomCtx, version_rules},
        remote,
    },
    storage::{
        accounts, events as ev_store, federation as fed_store, now_ms, state as state_store,
    },
};

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
    // `ver` once per room version this server supports.
    let versions = query_string(graph::SUPPORTED_VERSIONS.iter().map(|v| ("ver", *v)));
    let path = format!(
        "/_matrix/federation/v1/make_join/{}/{}?{versions}",
        percent_encode(room_id),
        percent_encode(user.as_str()),
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
        percent_encode(room_id),
        percent_encode(pdu.event_id.as_str()),
    );
    let body = serde_json::to_value(&signed)?;
    // Once the server has our join it tells us its members' presence, perhaps before the
    // room is stored here: held back until then.
    let under_way = JoinUnderWay::begin(state, server);
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
    under_way.stored().await;
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
        percent_encode(room_id),
        percent_encode(event_id),
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
        percent_encode(room_id),
        percent_encode(user.as_str()),
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
        percent_encode(room_id),
        percent_encode(pdu.event_id.as_str()),
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
