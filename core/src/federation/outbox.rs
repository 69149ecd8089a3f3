//! The outbox: delivers queued events to every destination, one transaction in flight per
//! destination, with exponential backoff that resets the moment the peer connects. Invites
//! of a destination's users (`PUT /_matrix/federation/v2/invite`) wait in the same way and go
//! before its transactions.
//!
//! The queue lives in SQLite, so nothing is lost when either side restarts. The worker sleeps
//! until something is queued, a peer connects, or a backoff expires: no periodic work.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use super::transport::FederationClient;
use crate::{
    identity::server_name_for_peer,
    p2p::{P2p, PeerEvent},
    services::Services,
    storage::{federation as fed_store, now_ms},
};

/// Most PDUs in one transaction (the spec's limit).
const MAX_PDUS: usize = 50;
/// Most EDUs in one transaction (the spec's limit).
const MAX_EDUS: usize = 100;
/// First retry delay after a failure.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(180);

/// Destinations the outbox is backing off from, and those of them that have since made a
/// signed request to this node: a peer that talks to us again (after being frozen, or on a
/// link that came back without a new connection) is retried at once, not after its back-off.
#[derive(Default)]
pub struct Heard {
    backing_off: Mutex<HashSet<String>>,
    heard: Mutex<HashSet<String>>,
    notify: Notify,
}

impl Heard {
    /// Notes a request from `server` (cheap unless the outbox is backing off from it).
    pub(crate) fn record(&self, server: &str) {
        let waiting = self
            .backing_off
            .lock()
            .map(|b| b.contains(server))
            .unwrap_or(false);
        if waiting && let Ok(mut heard) = self.heard.lock() {
            heard.insert(server.to_owned());
            self.notify.notify_one();
        }
    }

    fn backing_off(&self, server: &str, yes: bool) {
        if let Ok(mut b) = self.backing_off.lock() {
            if yes {
                b.insert(server.to_owned());
            } else {
                b.remove(server);
            }
        }
    }

    fn take(&self) -> Vec<String> {
        self.heard
            .lock()
            .map(|mut h| h.drain().collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Backoff {
    delay: Duration,
    until: Option<Instant>,
}

/// Starts the outbox worker; it stops with the node.
pub fn spawn(services: Arc<Services>, client: FederationClient, p2p: P2p) {
    let tasks = services.tasks.clone();
    tasks.spawn(async move {
        // Only commits that queued something wake the worker, not every write of the node.
        let mut changes = services.db.outbox_changes();
        let mut peers = p2p.subscribe();
        let (done_tx, mut done_rx) = mpsc::channel::<(String, u64, bool)>(16);
        // Each delivery task has a number, so the end of one that was given up on is not
        // taken for the end of the one that replaced it.
        let mut in_flight: HashMap<String, (u64, tokio::task::AbortHandle)> = HashMap::new();
        let mut next_task = 0u64;
        let mut backoff: HashMap<String, Backoff> = HashMap::new();
        loop {
            let pending = {
                let db = services.db.clone();
                db.read(fed_store::pending_destinations)
                    .await
                    .unwrap_or_default()
            };
            let now = Instant::now();
            for dest in pending {
                if in_flight.contains_key(&dest)
                    || backoff
                        .get(&dest)
                        .and_then(|b| b.until)
                        .is_some_and(|u| u > now)
                {
                    continue;
                }
                next_task += 1;
                let task = next_task;
                let (services, client, done) = (services.clone(), client.clone(), done_tx.clone());
                let d = dest.clone();
                let handle = services.tasks.clone().spawn(async move {
                    let ok = deliver(&services, &client, &d).await;
                    let _ = done.send((d, task, ok)).await;
                });
                in_flight.insert(dest, (task, handle));
            }
            let next_retry = backoff
                .values()
                .filter_map(|b| b.until)
                .filter(|u| *u > now)
                .min();
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                Some((dest, task, ok)) = done_rx.recv() => {
                    if in_flight.get(&dest).is_none_or(|(t, _)| *t != task) {
                        continue;
                    }
                    in_flight.remove(&dest);
                    services.heard.backing_off(&dest, !ok);
                    let b = backoff.entry(dest.clone()).or_default();
                    if ok {
                        *b = Backoff::default();
                    } else {
                        b.delay = (b.delay * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                        b.until = Some(Instant::now() + b.delay);
                        trim(&services, &dest).await;
                    }
                }
                event = peers.recv() => {
                    if let Ok(PeerEvent::Connected(peer, _)) = event
                        && let Some(server) = server_name_for_peer(&peer)
                    {
                        backoff.remove(&server);
                        // A delivery still waiting on the old connection (or on dialling an
                        // address that died) starts again on the new one; what it may have
                        // delivered already is recognised as known by the receiver.
                        if let Some((_, handle)) = in_flight.remove(&server) {
                            handle.abort();
                        }
                    }
                }
                _ = services.heard.notify.notified() => {
                    for server in services.heard.take() {
                        backoff.remove(&server);
                    }
                }
                _ = sleep_until(next_retry) => {}
            }
        }
    });
}

/// Most events kept queued for one destination that does not take them.
const MAX_QUEUED: usize = 2_000;
/// Longest an event waits for a destination that does not take it.
const MAX_QUEUED_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Bounds the queue of a destination that failed: it catches up from the room's graph (on
/// connect, and through `get_missing_events`) when it is back, so what is dropped is not lost.
async fn trim(services: &Services, dest: &str) {
    let d = dest.to_owned();
    let oldest = now_ms() - MAX_QUEUED_AGE.as_millis() as i64;
    match services
        .db
        .write(move |txn| fed_store::trim_queue(txn, &d, MAX_QUEUED, oldest))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(%dest, dropped = n, "outbox queue trimmed"),
        Err(e) => tracing::warn!(%dest, error = %e, "could not trim the outbox queue"),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Most invites read from the queue at a time.
const INVITE_BATCH: usize = 16;

/// Sends everything queued for one destination: its users' invites, then transactions, one
/// at a time. Returns false on the first failure.
async fn deliver(services: &Services, client: &FederationClient, dest: &str) -> bool {
    loop {
        let d = dest.to_owned();
        let Ok(invites) = services
            .db
            .read(move |c| fed_store::next_invites(c, &d, INVITE_BATCH))
            .await
        else {
            return false;
        };
        if invites.is_empty() {
            break;
        }
        for invite in &invites {
            if !super::membership::deliver_invite(services, client, dest, invite).await {
                return false;
            }
        }
    }
    loop {
        let d = dest.to_owned();
        let queued = services
            .db
            .read(move |c| {
                Ok((
                    fed_store::next_batch(c, &d, MAX_PDUS)?,
                    fed_store::next_edus(c, &d, MAX_EDUS)?,
                ))
            })
            .await;
        let Ok((batch, edus)) = queued else {
            return false;
        };
        if batch.is_empty() && edus.is_empty() {
            return true;
        }
        let last = batch.last().map(|(id, _, _)| *id);
        let last_edu = edus.last().map(|(id, _)| *id);
        let pdus: Vec<Value> = batch
            .iter()
            .filter_map(|(_, _, json)| serde_json::from_str(json).ok())
            .collect();
        let edu_values: Vec<Value> = edus
            .iter()
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect();
        let origin = services.identity.server_name().to_string();
        let txn_id = format!(
            "{}_{}_{}",
            now_ms(),
            last.unwrap_or(0),
            last_edu.unwrap_or(0)
        );
        let body = json!({ "origin": origin, "origin_server_ts": now_ms(), "pdus": pdus, "edus": edu_values });
        let path = format!("/_matrix/federation/v1/send/{txn_id}");
        match client.request(dest, Method::PUT, &path, Some(body)).await {
            Ok(resp) if resp.status == StatusCode::OK => {
                let d = dest.to_owned();
                let delivered = services
                    .db
                    .write(move |txn| {
                        if let Some(last) = last {
                            fed_store::delete_upto(txn, &d, last)?;
                        }
                        if let Some(last) = last_edu {
                            fed_store::delete_edus_upto(txn, &d, last)?;
                        }
                        Ok(())
                    })
                    .await;
                if delivered.is_err() {
                    return false;
                }
            }
            Ok(resp) => {
                tracing::info!(%dest, status = %resp.status, "transaction refused; will retry");
                return false;
            }
            Err(e) => {
                tracing::debug!(%dest, error = %e, "destination unreachable; will retry");
                return false;
            }
        }
    }
}
