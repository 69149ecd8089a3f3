//! Catch-up when a peer connects: for every room both servers are in, each side asks the
//! other for its forward extremities and pulls what it lacks with `get_missing_events`.
//!
//! Nobody has to send a new event, and nothing depends on the other side's outbox: the
//! events fetched go through the same checks as events received in a transaction. The worker
//! only wakes when a peer connects.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use axum::{
    Json,
    extract::State,
    http::{Method, StatusCode},
};
use ruma::CanonicalJsonObject;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Signed, transport::FederationClient};
use crate::{
    error::MatrixError,
    http::{AppState, percent_encode},
    identity::server_name_for_peer,
    p2p::{P2p, PeerEvent},
    rooms::{graph::version_rules, remote},
    services::Services,
    storage::{catchup as store, events as ev_store},
};

/// The path of the extremities endpoint.
pub const EXTREMITIES_PATH: &str = "/_matrix/federation/unstable/org.neurite/extremities";
/// Events asked for per `get_missing_events` request (the most the server answers).
const PAGE: usize = 100;
/// Most events fetched for one room in one catch-up, and most bytes of them held (as
/// canonical JSON) until they are handed on. What lies beyond is fetched by the inbound
/// resolver, which the oldest events handed on start when their prev events are missing.
const MAX_EVENTS_PER_ROOM: usize = 1_000;
const MAX_BYTES_PER_ROOM: usize = 8 * 1024 * 1024;
/// Latest events a page asks back from: a server whose events cite many unknown prev events
/// does not make the next question (or the fetches one by one) any larger.
const MAX_FRONTIER: usize = 20;
/// Events fetched one by one (`/event`) per page, for a server that leaves them out.
const MAX_SINGLE_FETCHES: usize = 20;

/// `GET /_matrix/federation/unstable/org.neurite/extremities`: the forward extremities of
/// every room the requesting server shares with this one.
pub(super) async fn extremities(
    State(state): State<AppState>,
    signed: Signed<Value>,
) -> Result<Json<Value>, MatrixError> {
    let local = state.identity.server_name().to_string();
    let rooms = state
        .db
        .read(move |conn| {
            let mut rooms = serde_json::Map::new();
            for room in store::rooms_shared_with(conn, &local, &signed.origin)? {
                let ids = ev_store::forward_extremities(conn, &room)?;
                rooms.insert(room, json!(ids));
            }
            Ok(rooms)
        })
        .await?;
    Ok(Json(json!({ "rooms": rooms })))
}

/// Starts the catch-up worker: one catch-up per peer connection, until the node stops.
pub fn spawn(services: Arc<Services>, client: FederationClient, p2p: P2p) {
    let mut peers = p2p.subscribe();
    let tasks = services.tasks.clone();
    tasks.spawn(async move {
        let (done_tx, mut done_rx) = mpsc::channel::<String>(16);
        let mut running: HashSet<String> = HashSet::new();
        // Peers that connected before this worker subscribed.
        let mut queue: Vec<String> = p2p
            .peers()
            .await
            .into_iter()
            .filter(|p| p.connected)
            .filter_map(|p| p.server_name)
            .collect();
        loop {
            for server in queue.drain(..) {
                if !running.insert(server.clone()) {
                    continue;
                }
                let (services, client, done) = (services.clone(), client.clone(), done_tx.clone());
                services.tasks.clone().spawn(async move {
                    catch_up(&services, &client, &server).await;
                    let _ = done.send(server).await;
                });
            }
            tokio::select! {
                Some(server) = done_rx.recv() => { running.remove(&server); }
                event = peers.recv() => match event {
                    Ok(PeerEvent::Connected(peer, _)) => {
                        if let Some(server) = server_name_for_peer(&peer) {
                            queue.push(server);
                        }
                        super::inbound::peer_connected(&services).await;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        queue.extend(
                            p2p.peers().await.into_iter().filter(|p| p.connected)
                                .filter_map(|p| p.server_name),
                        );
                    }
                    Err(_) => break,
                },
            }
        }
    });
}

/// Brings every room shared with `server` up to date with what `server` has. Returns how
/// many events were stored.
pub async fn catch_up(services: &AppState, client: &FederationClient, server: &str) -> usize {
    let resp = match client
        .request(server, Method::GET, EXTREMITIES_PATH, None)
        .await
    {
        Ok(r) if r.status == StatusCode::OK => r,
        Ok(r) => {
            tracing::debug!(%server, status = %r.status, "peer does not offer catch-up");
            return 0;
        }
        Err(e) => {
            tracing::debug!(%server, error = %e, "catch-up request failed");
            return 0;
        }
    };
    let Some(rooms) = resp.body["rooms"].as_object() else {
        return 0;
    };
    let mut stored = 0;
    for (room_id, ids) in rooms {
        let theirs: Vec<String> = ids
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .take(PAGE)
                    .collect()
            })
            .unwrap_or_default();
        match catch_up_room(services, client, server, room_id, theirs).await {
            Ok(n) => stored += n,
            Err(e) => tracing::info!(%server, %room_id, error = %e, "room catch-up stopped"),
        }
    }
    if stored > 0 {
        tracing::info!(%server, events = stored, "caught up");
    }
    stored
}

/// One room: walks back from the peer's extremities to events we have, then stores what it
/// found oldest first.
async fn catch_up_room(
    services: &AppState,
    client: &FederationClient,
    server: &str,
    room_id: &str,
    theirs: Vec<String>,
) -> Result<usize, String> {
    let rid = room_id.to_owned();
    let tips = theirs.clone();
    let (room, ours, have) = services
        .db
        .read(move |c| {
            Ok((
                ev_store::get_room(c, &rid)?,
                ev_store::forward_extremities(c, &rid)?,
                store::known_events(c, &tips)?,
            ))
        })
        .await
        .map_err(|e| e.to_string())?;
    let Some(room) = room else {
        return Ok(0);
    };
    let (_, rules) = version_rules(&room.room_version).map_err(|e| e.message)?;
    let have: HashSet<String> = have.into_iter().collect();
    let mut frontier: Vec<String> = theirs
        .into_iter()
        .filter(|id| !have.contains(id))
        .take(MAX_FRONTIER)
        .collect();
    let mut found: HashMap<String, (i64, i64, String)> = HashMap::new();
    let mut bytes = 0usize;
    let path = format!(
        "/_matrix/federation/v1/get_missing_events/{}",
        percent_encode(room_id)
    );
    while !frontier.is_empty() && found.len() < MAX_EVENTS_PER_ROOM && bytes < MAX_BYTES_PER_ROOM {
        let body = json!({ "earliest_events": ours, "latest_events": frontier, "limit": PAGE });
        // No more than a page is read of the answer, however long it is.
        let (status, mut lists) = client
            .request_lists(server, Method::POST, &path, Some(body), &[("events", PAGE)])
            .await
            .map_err(|e| e.to_string())?;
        if status != StatusCode::OK {
            return Err(format!("get_missing_events answered {status}"));
        }
        let page = lists.swap_remove(0);
        let mut prevs: Vec<String> = Vec::new();
        let mut new_ids = HashSet::new();
        for pdu in page {
            if let Some((id, depth, ts, p, text)) = identify(pdu, room_id, &rules)
                && !found.contains_key(&id)
            {
                prevs.extend(p);
                new_ids.insert(id.clone());
                bytes += text.len();
                found.insert(id, (depth, ts, text));
            }
        }
        // A server that leaves the latest events themselves out: fetch those one by one.
        let absent: Vec<String> = frontier
            .iter()
            .filter(|id| !found.contains_key(*id))
            .take(MAX_SINGLE_FETCHES)
            .cloned()
            .collect();
        for id in &absent {
            let path = format!("/_matrix/federation/v1/event/{}", percent_encode(id));
            let Ok(resp) = client.request(server, Method::GET, &path, None).await else {
                continue;
            };
            let Some(pdu) = resp.body["pdus"].get(0).cloned() else {
                continue;
            };
            if let Some((got, depth, ts, p, text)) = identify(pdu, room_id, &rules)
                && got == *id
            {
                prevs.extend(p);
                new_ids.insert(got.clone());
                bytes += text.len();
                found.insert(got, (depth, ts, text));
            }
        }
        if new_ids.is_empty() {
            break;
        }
        prevs.retain(|p| !found.contains_key(p));
        prevs.sort();
        prevs.dedup();
        let check = prevs.clone();
        let known = services
            .db
            .read(move |c| store::known_events(c, &check))
            .await
            .map_err(|e| e.to_string())?;
        frontier = prevs
            .into_iter()
            .filter(|p| !known.contains(p))
            .take(MAX_FRONTIER)
            .collect();
    }
    // The peer walks back until it meets our extremities, so a page can hold events we
    // already have (outliers from a join, or history before a fork): keep only new ones.
    let ids: Vec<String> = found.keys().cloned().collect();
    let known = services
        .db
        .read(move |c| store::known_events(c, &ids))
        .await
        .map_err(|e| e.to_string())?;
    for id in known {
        found.remove(&id);
    }
    let mut ordered: Vec<(i64, i64, String)> = found.into_values().collect();
    ordered.sort_by_key(|(depth, ts, _)| (*depth, *ts));
    let mut stored = 0;
    // The same way in as a transaction: what depends on missing events waits for them. Each
    // chunk is built from its text only when it is handed on.
    for chunk in ordered.chunks(50) {
        let pdus: Vec<Value> = chunk
            .iter()
            .filter_map(|(_, _, text)| serde_json::from_str(text).ok())
            .collect();
        let results = super::inbound::receive(services, server, pdus).await;
        stored += results.iter().filter(|(_, r)| r.is_ok()).count();
    }
    Ok(stored)
}

/// A fetched PDU's event id, depth, timestamp, prev events and text as verified, if it
/// verifies and belongs to the room.
fn identify(
    pdu: Value,
    room_id: &str,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Option<(String, i64, i64, Vec<String>, String)> {
    let obj: CanonicalJsonObject = serde_json::from_value(pdu).ok()?;
    if obj.get("room_id").and_then(|v| v.as_str()) != Some(room_id) {
        return None;
    }
    let (id, obj) = remote::verify_pdu(obj, rules).ok()?;
    let int = |key: &str| match obj.get(key) {
        Some(ruma::CanonicalJsonValue::Integer(i)) => i64::from(*i),
        _ => 0,
    };
    let prevs = match obj.get("prev_events") {
        Some(ruma::CanonicalJsonValue::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let text = serde_json::to_string(&obj).ok()?;
    Some((
        id.to_string(),
        int("depth"),
        int("origin_server_ts"),
        prevs,
        text,
    ))
}
