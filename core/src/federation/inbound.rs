//! The one way in for PDUs from other servers: transactions, catch-up, and every answer to a
//! fetch go through [`receive`].
//!
//! Each PDU is verified (signatures, content hash), then offered to the room graph
//! ([`remote::accept_pdu`]: auth against its auth events, against the state before it,
//! soft-fail against the current state). One that depends on events this node lacks is not
//! rejected: it waits in the holding area (`staged_events`) while a resolver fetches what is
//! missing, and is tried again whenever anything new is stored in its room.
//!
//! The resolver, one at a time per room, repeats until nothing more can be done:
//! 1. try every waiting event, shallowest first, until a pass stores nothing;
//! 2. for events missing auth events: `event_auth` of the waiting event;
//! 3. for events missing prev events: `get_missing_events` from our forward extremities;
//! 4. for prev events still missing after that (no server would give them, or the run's
//!    budget for history is spent): the state at that event (`/state`), so the events after
//!    it can be placed in the graph.
//!
//! Each fetch asks the server that handed us the event first, then its sender's server, then
//! other servers in the room. Bounds: the holding area per room and per sending server,
//! an expiry for waiting events, the number of events fetched per round and of rounds per
//! run, and a back-off for fetches that found nothing. When events still wait after a run,
//! the room is tried again after a back-off (and whenever a peer connects), never on a
//! timer while nothing waits.
//!
//! One file on purpose (about 1,050 lines of code, then its tests): receiving, holding,
//! fetching what is missing and resolving share the holding area's invariants and one
//! back-off, and read best top to bottom. Fetching (`fetch_missing` onwards) is the seam to
//! split along when it grows.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{Method, StatusCode};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId};
use serde_json::{Value, json};

use super::transport::FederationClient;
use crate::{
    e2ee::remote::server_of,
    error::Result,
    http::{AppState, percent_encode, query_string},
    rooms::remote::{self, Accepted, Missing},
    storage::{
        WriteTxn, events as ev_store, federation as fed_store, now_ms, staged, staged::StagedEvent,
        state::StateMap,
    },
};

/// Most events of one room waiting at once.
pub const MAX_STAGED_PER_ROOM: usize = 2_000;
/// Most waiting events handed over by one server.
pub const MAX_STAGED_PER_ORIGIN: usize = 1_000;
/// How long an event may wait for what it depends on.
const STAGED_TTL: Duration = Duration::from_secs(24 * 3600);
/// Passes over a room's waiting events in one try.
const MAX_PASSES: usize = 8;
/// Fetch-and-retry rounds in one resolver run.
const MAX_ROUNDS: usize = 12;
/// Servers asked for one missing piece.
const MAX_SERVERS_ASKED: usize = 3;
/// Events fetched through `get_missing_events` in one resolver run; beyond that, the state at
/// the edge of what is here is fetched instead of more history.
const HISTORY_BUDGET: usize = 1_000;
/// Events asked for per `get_missing_events`.
const MISSING_EVENTS_LIMIT: usize = 100;
/// Waiting events whose gaps are fetched per round.
const MAX_GAPS_PER_ROUND: usize = 20;
/// Prev events whose state is fetched per round.
const MAX_STATE_FETCHES_PER_ROUND: usize = 4;
/// Most events taken from one `event_auth` or `/state` answer.
const MAX_FETCHED_EVENTS: usize = 2_000;
/// Most events taken from answers of every kind in one resolver run: whatever the answers
/// say and however many of their events lack others in turn, one run's work has this bound.
const MAX_FETCHED_PER_RUN: usize = 4_000;
/// How long a fetch that found nothing is not repeated (unless a peer connects).
const FAILED_FETCH_PAUSE: Duration = Duration::from_secs(20);
/// How long an event waits for the history before it before the state at its prev events is
/// fetched instead (which leaves that history out).
const STATE_FALLBACK_AFTER: Duration = Duration::from_secs(30);
/// Longest wait for one fetch: a room's waiting events wait on it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(8);
/// Most remembered failed fetches.
const MAX_FAILED_FETCHES: usize = 10_000;
/// First and longest wait before a room whose events still wait is tried again.
const MIN_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// What the inbound path keeps in memory: which rooms are being resolved, and which fetches
/// recently found nothing. Both bounded by the rooms this node is in and by
/// [`MAX_FAILED_FETCHES`].
#[derive(Default)]
pub struct Inbound {
    rooms: Mutex<HashMap<String, RoomRun>>,
    failed: Mutex<HashMap<String, Instant>>,
    /// Servers whose last fetch got no answer (unreachable, or connected but frozen): asked
    /// after the others for [`FAILED_FETCH_PAUSE`], so one silent peer does not hold up a
    /// room's waiting events.
    silent: Mutex<HashMap<String, Instant>>,
}

#[derive(Default)]
struct RoomRun {
    /// A resolver task is running for the room.
    running: bool,
    /// Something changed while it ran: run again.
    dirty: bool,
    /// Wait before the next retry when events still wait.
    retry: Duration,
    /// A retry is scheduled.
    retry_scheduled: bool,
}

impl Inbound {
    fn is_silent(&self, server: &str) -> bool {
        self.silent.lock().is_ok_and(|silent| {
            silent
                .get(server)
                .is_some_and(|at| at.elapsed() < FAILED_FETCH_PAUSE)
        })
    }

    /// Notes whether `server` answered (a request it makes to us counts as an answer).
    pub(crate) fn heard_from(&self, server: &str, answered: bool) {
        if let Ok(mut silent) = self.silent.lock() {
            if answered {
                if !silent.is_empty() {
                    silent.remove(server);
                }
            } else {
                if silent.len() >= MAX_FAILED_FETCHES {
                    silent.clear();
                }
                silent.insert(server.to_owned(), Instant::now());
            }
        }
    }

    fn recently_failed(&self, key: &str) -> bool {
        let Ok(failed) = self.failed.lock() else {
            return false;
        };
        failed
            .get(key)
            .is_some_and(|at| at.elapsed() < FAILED_FETCH_PAUSE)
    }

    fn note_failure(&self, key: String) {
        if let Ok(mut failed) = self.failed.lock() {
            if failed.len() >= MAX_FAILED_FETCHES {
                failed.retain(|_, at| at.elapsed() < FAILED_FETCH_PAUSE);
                if failed.len() >= MAX_FAILED_FETCHES {
                    failed.clear();
                }
            }
            failed.insert(key, Instant::now());
        }
    }
}

/// The outcome of one received PDU, for the `/send` answer.
pub type PduResult = (String, std::result::Result<(), String>);

/// Verifies and takes in PDUs handed over by `origin`. Events that depend on missing ones
/// wait; the rooms concerned are resolved in the background.
pub async fn receive(state: &AppState, origin: &str, pdus: Vec<Value>) -> Vec<PduResult> {
    let (results, taken) = verify_and_take_in(state, origin, pdus).await;
    for room_id in taken.waiting {
        kick(state, &room_id);
    }
    for room_id in taken.settled {
        super::own_membership::keep(state, &room_id).await;
    }
    state.notifier.notify();
    results
}

/// The rooms a batch of PDUs went to.
pub(crate) struct TakenIn {
    /// Rooms where events now wait for missing ones (the resolver's work).
    pub waiting: Vec<String>,
    /// Rooms where nothing waits.
    pub settled: Vec<String>,
}

/// [`receive`] without the resolver and what follows it: verifies the PDUs and offers them
/// to their rooms' graphs. Returns each PDU's outcome and where they went.
pub(crate) async fn verify_and_take_in(
    state: &AppState,
    origin: &str,
    pdus: Vec<Value>,
) -> (Vec<PduResult>, TakenIn) {
    let mut results = Vec::new();
    let mut waiting_rooms = Vec::new();
    let mut settled_rooms = Vec::new();
    let mut by_room: HashMap<String, Vec<(OwnedEventId, CanonicalJsonObject)>> = HashMap::new();
    let mut rooms: HashMap<String, Option<ruma::room_version_rules::RoomVersionRules>> =
        HashMap::new();
    for pdu in pdus {
        let Ok(obj) = serde_json::from_value::<CanonicalJsonObject>(pdu) else {
            results.push((String::new(), Err("Invalid PDU".into())));
            continue;
        };
        let Some(room_id) = str_field(&obj, "room_id").map(str::to_owned) else {
            results.push((String::new(), Err("PDU without a room id".into())));
            continue;
        };
        if !rooms.contains_key(&room_id) {
            let rid = room_id.clone();
            let rules = state
                .db
                .read(move |c| remote::known_room_rules(c, &rid))
                .await;
            match rules {
                Ok(rules) => {
                    rooms.insert(room_id.clone(), rules);
                }
                Err(e) => {
                    results.push((String::new(), Err(e.to_string())));
                    continue;
                }
            }
        }
        let Some(rules) = rooms.get(&room_id).cloned().flatten() else {
            results.push((String::new(), Err("This server is not in that room".into())));
            continue;
        };
        // A refused PDU is answered under its event id when it has one.
        match remote::verify_pdu_keyed(obj, &rules) {
            Ok((id, obj)) => by_room.entry(room_id).or_default().push((id, obj)),
            Err((id, e)) => results.push((id, Err(e))),
        }
    }
    for (room_id, events) in by_room {
        let (rid, from) = (room_id.clone(), origin.to_owned());
        let local = state.identity.server_name().to_string();
        let outcome = state
            .db
            .write(move |txn| take_in(txn, &rid, &from, &local, events))
            .await;
        match outcome {
            Ok((room_results, waiting)) => {
                results.extend(room_results);
                if waiting {
                    waiting_rooms.push(room_id);
                } else {
                    settled_rooms.push(room_id);
                }
            }
            Err(e) => tracing::warn!(room = %room_id, error = %e, "could not take in events"),
        }
    }
    (
        results,
        TakenIn {
            waiting: waiting_rooms,
            settled: settled_rooms,
        },
    )
}

/// Offers verified events of one room to the graph; holds those that depend on missing
/// events. Returns each event's outcome, and whether events of the room wait (so the resolver
/// has work: something was held now, or something was stored that waiting events may need).
fn take_in(
    txn: &mut WriteTxn<'_>,
    room_id: &str,
    origin: &str,
    local: &str,
    events: Vec<(OwnedEventId, CanonicalJsonObject)>,
) -> Result<(Vec<PduResult>, bool)> {
    let Some(rules) = remote::known_room_rules(txn, room_id)? else {
        return Ok((Vec::new(), false));
    };
    let mut results = Vec::new();
    let (mut stored, mut held) = (false, false);
    for (id, obj) in events {
        let outcome = accept_and_welcome(txn, room_id, &id, &obj, &rules, local)?;
        let result = match outcome {
            Accepted::Stored(_) | Accepted::Outlier => {
                stored = true;
                Ok(())
            }
            Accepted::Known => Ok(()),
            Accepted::Rejected(why) | Accepted::SoftFailed(why) => {
                stored = true;
                Err(why)
            }
            Accepted::Missing(_) => match hold(txn, room_id, origin, &id, &obj)? {
                Some(why) => Err(why),
                None => {
                    held = true;
                    Ok(())
                }
            },
        };
        results.push((id.to_string(), result));
    }
    let waiting = held || (stored && staged::count_in_room(txn, room_id)? > 0);
    Ok((results, waiting))
}

/// Puts an event in the holding area unless a bound says no (the reason is returned).
fn hold(
    txn: &WriteTxn<'_>,
    room_id: &str,
    origin: &str,
    id: &EventId,
    obj: &CanonicalJsonObject,
) -> Result<Option<String>> {
    if staged::is_staged(txn, id.as_str())? {
        return Ok(None);
    }
    if staged::count_in_room(txn, room_id)? >= MAX_STAGED_PER_ROOM {
        return Ok(Some(
            "Too many events of this room wait for missing events".into(),
        ));
    }
    if staged::count_from_origin(txn, origin)? >= MAX_STAGED_PER_ORIGIN {
        return Ok(Some(
            "Too many of your events wait for missing events".into(),
        ));
    }
    let depth = match obj.get("depth") {
        Some(CanonicalJsonValue::Integer(i)) => i64::from(*i),
        _ => 0,
    };
    staged::stage(
        txn,
        &StagedEvent {
            event_id: id.to_string(),
            room_id: room_id.to_owned(),
            origin: origin.to_owned(),
            depth,
            json: serde_json::to_string(obj)?,
            received_ts: now_ms(),
        },
    )?;
    Ok(None)
}

/// [`remote::accept_pdu`], and when the event brings a server into the room for the first
/// time, our forward extremities are queued for that server: events sent before it was
/// known to be here would otherwise never reach it until someone cites them.
pub(crate) fn accept_and_welcome(
    txn: &mut WriteTxn<'_>,
    room_id: &str,
    id: &EventId,
    obj: &CanonicalJsonObject,
    rules: &ruma::room_version_rules::RoomVersionRules,
    local: &str,
) -> Result<Accepted> {
    let joining = joining_server(obj);
    let new_server = match joining {
        Some(server) if server != local => !fed_store::servers_in_room(txn, room_id)?
            .iter()
            .any(|s| s == server),
        _ => false,
    };
    let outcome = remote::accept_pdu(txn, room_id, id.to_owned(), obj, rules)?;
    if new_server
        && matches!(outcome, Accepted::Stored(_))
        && let Some(server) = joining
    {
        let now = now_ms();
        for extremity in ev_store::forward_extremities(txn, room_id)? {
            if extremity != id.as_str() {
                fed_store::enqueue(txn, server, &extremity, now)?;
            }
        }
    }
    Ok(outcome)
}

/// The server of the user an `m.room.member` join is about.
fn joining_server(obj: &CanonicalJsonObject) -> Option<&str> {
    if str_field(obj, "type") != Some("m.room.member") {
        return None;
    }
    let Some(CanonicalJsonValue::Object(content)) = obj.get("content") else {
        return None;
    };
    if content.get("membership") != Some(&CanonicalJsonValue::String("join".into())) {
        return None;
    }
    server_of(str_field(obj, "state_key")?)
}

fn str_field<'a>(obj: &'a CanonicalJsonObject, key: &str) -> Option<&'a str> {
    match obj.get(key) {
        Some(CanonicalJsonValue::String(s)) => Some(s),
        _ => None,
    }
}

/// Makes sure the room's waiting events are tried (now, or once the running resolver ends).
pub fn kick(state: &AppState, room_id: &str) {
    let Ok(mut rooms) = state.inbound.rooms.lock() else {
        return;
    };
    let run = rooms.entry(room_id.to_owned()).or_default();
    if run.running {
        run.dirty = true;
        return;
    }
    run.running = true;
    let (state, room) = (state.clone(), room_id.to_owned());
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        loop {
            let progress = resolve_room(&state, &room).await;
            let Ok(mut rooms) = state.inbound.rooms.lock() else {
                return;
            };
            let Some(run) = rooms.get_mut(&room) else {
                return;
            };
            if run.dirty {
                run.dirty = false;
                continue;
            }
            run.running = false;
            match progress {
                Resolved::Done => {
                    rooms.remove(&room);
                }
                Resolved::Waiting { progressed } => {
                    run.retry = if progressed {
                        MIN_RETRY
                    } else {
                        (run.retry * 2).clamp(MIN_RETRY, MAX_RETRY)
                    };
                    if !run.retry_scheduled {
                        run.retry_scheduled = true;
                        let (state, room, wait) = (state.clone(), room.clone(), run.retry);
                        state.tasks.clone().spawn(async move {
                            tokio::time::sleep(wait).await;
                            if let Ok(mut rooms) = state.inbound.rooms.lock()
                                && let Some(run) = rooms.get_mut(&room)
                            {
                                run.retry_scheduled = false;
                            }
                            if state.federation().is_some() {
                                kick(&state, &room);
                            }
                        });
                    }
                }
            }
            return;
        }
    });
}

/// A peer connected: what it has may be what our waiting events lack. Forget failed fetches
/// and try every room with waiting events again.
pub async fn peer_connected(state: &AppState) {
    if let Ok(mut failed) = state.inbound.failed.lock() {
        failed.clear();
    }
    if let Ok(mut silent) = state.inbound.silent.lock() {
        silent.clear();
    }
    resume(state).await;
}

/// Tries every room that has waiting events (at start, and when a peer connects).
pub async fn resume(state: &AppState) {
    let rooms = state.db.read(staged::rooms).await.unwrap_or_default();
    for room in rooms {
        kick(state, &room);
    }
}

enum Resolved {
    /// Nothing waits any more.
    Done,
    /// Events still wait; `progressed` if this run placed any in the room's graph (events
    /// fetched that only wait in turn do not count: a server that answers with ever more
    /// events that lack others is tried again later and later).
    Waiting { progressed: bool },
}

/// One resolver run for a room.
async fn resolve_room(state: &AppState, room_id: &str) -> Resolved {
    let mut progressed = false;
    let mut gaps = Gaps::default();
    for _ in 0..MAX_ROUNDS {
        let (stored, waiting) = match drain(state, room_id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(room = %room_id, error = %e, "could not try waiting events");
                return Resolved::Waiting { progressed };
            }
        };
        if stored > 0 {
            progressed = true;
            state.notifier.notify();
        }
        if waiting.is_empty() {
            if progressed {
                super::own_membership::keep(state, room_id).await;
            }
            return Resolved::Done;
        }
        let Some(client) = state.federation().cloned() else {
            return Resolved::Waiting { progressed };
        };
        let fetched = fetch_missing(state, &client, room_id, &waiting, &mut gaps).await;
        if fetched == 0 {
            return Resolved::Waiting { progressed };
        }
    }
    Resolved::Waiting { progressed }
}

/// Tries every waiting event of the room, shallowest first, until a pass stores nothing.
/// Returns how many were stored and what the rest still lack.
async fn drain(state: &AppState, room_id: &str) -> Result<(usize, Vec<(StagedEvent, Missing)>)> {
    let room = room_id.to_owned();
    let local = state.identity.server_name().to_string();
    state
        .db
        .write(move |txn| {
            staged::expire(txn, now_ms() - STAGED_TTL.as_millis() as i64)?;
            let Some(rules) = remote::known_room_rules(txn, &room)? else {
                return Ok((0, Vec::new()));
            };
            let mut stored = 0;
            let mut passes = 0;
            loop {
                passes += 1;
                let mut waiting = Vec::new();
                let mut placed = 0;
                for ev in staged::in_room(txn, &room, MAX_STAGED_PER_ROOM)? {
                    let obj: CanonicalJsonObject = serde_json::from_str(&ev.json)?;
                    let Ok(id) = EventId::parse(&ev.event_id) else {
                        staged::unstage(txn, &ev.event_id)?;
                        continue;
                    };
                    match accept_and_welcome(txn, &room, &id, &obj, &rules, &local)? {
                        Accepted::Missing(missing) => waiting.push((ev, missing)),
                        outcome => {
                            if !matches!(outcome, Accepted::Known) {
                                placed += 1;
                            }
                            staged::unstage(txn, &ev.event_id)?;
                        }
                    }
                }
                stored += placed;
                // Events are tried shallowest first, so one pass places a whole chain whose
                // depths are honest; more passes only for depths that lie, and not many.
                if placed == 0 || waiting.is_empty() || passes >= MAX_PASSES {
                    return Ok((stored, waiting));
                }
            }
        })
        .await
}

/// Servers to ask about a waiting event: the one that handed it over, its sender's, then
/// the others in the room.
async fn candidates(state: &AppState, room_id: &str, ev: &StagedEvent) -> Vec<String> {
    let local = state.identity.server_name().to_string();
    let mut out = vec![ev.origin.clone()];
    if let Ok(v) = serde_json::from_str::<Value>(&ev.json)
        && let Some(server) = v["sender"].as_str().and_then(server_of)
    {
        out.push(server.to_owned());
    }
    let rid = room_id.to_owned();
    let mut others = state
        .db
        .read(move |c| fed_store::servers_in_room(c, &rid))
        .await
        .unwrap_or_default();
    others.sort();
    out.extend(others);
    let mut seen = HashSet::new();
    out.retain(|s| *s != local && seen.insert(s.clone()));
    // Servers that did not answer lately go last (a stable sort keeps the order otherwise).
    out.sort_by_key(|s| state.inbound.is_silent(s));
    out
}

/// What one resolver run has asked of `get_missing_events`, and taken from answers.
#[derive(Default)]
struct Gaps {
    /// Waiting events whose gaps were asked for.
    asked: HashSet<String>,
    /// Events the `get_missing_events` answers brought.
    fetched: usize,
    /// Events taken from answers of any kind (see [`MAX_FETCHED_PER_RUN`]).
    taken: usize,
}

impl Gaps {
    /// How many events the next answer may give, at most `cap`.
    fn room_for(&self, cap: usize) -> usize {
        cap.min(MAX_FETCHED_PER_RUN.saturating_sub(self.taken))
    }
}

/// Fetches what waiting events lack; returns how many events were stored or held.
async fn fetch_missing(
    state: &AppState,
    client: &FederationClient,
    room_id: &str,
    waiting: &[(StagedEvent, Missing)],
    gaps: &mut Gaps,
) -> usize {
    let mut got = 0;
    // Auth events: the auth chain of the waiting event.
    let mut chains = 0;
    for (ev, missing) in waiting {
        if missing.auth.is_empty() || chains >= MAX_GAPS_PER_ROUND {
            continue;
        }
        if gaps.room_for(MAX_FETCHED_EVENTS) == 0 {
            return got;
        }
        let key = format!("auth {}", ev.event_id);
        if state.inbound.recently_failed(&key) {
            continue;
        }
        chains += 1;
        let mut found = 0;
        for server in candidates(state, room_id, ev)
            .await
            .into_iter()
            .take(MAX_SERVERS_ASKED)
        {
            let path = format!(
                "/_matrix/federation/v1/event_auth/{}/{}",
                percent_encode(room_id),
                percent_encode(&ev.event_id)
            );
            let cap = gaps.room_for(MAX_FETCHED_EVENTS);
            let Some(mut lists) = get_lists(
                state,
                client,
                &server,
                Method::GET,
                &path,
                None,
                &[("auth_chain", cap)],
            )
            .await
            else {
                continue;
            };
            let pdus = lists.swap_remove(0);
            gaps.taken += pdus.len();
            found = store_outliers(state, room_id, pdus).await;
            if found > 0 {
                break;
            }
        }
        if found == 0 {
            state.inbound.note_failure(key);
        }
        got += found;
    }

    // Prev events: the gap between our forward extremities and the waiting events, while the
    // run's budget for history lasts (beyond it, the state at the gap's edge is fetched).
    if gaps.fetched >= HISTORY_BUDGET {
        for (ev, _) in waiting {
            gaps.asked.insert(ev.event_id.clone());
        }
    }
    let gap_events: Vec<&StagedEvent> = waiting
        .iter()
        .filter(|(ev, m)| !m.prev.is_empty() && !gaps.asked.contains(&ev.event_id))
        .map(|(ev, _)| ev)
        .take(MAX_GAPS_PER_ROUND)
        .collect();
    if let Some(first) = gap_events.first()
        && gaps.room_for(MISSING_EVENTS_LIMIT) > 0
    {
        let latest: Vec<String> = gap_events.iter().map(|e| e.event_id.clone()).collect();
        gaps.asked.extend(latest.iter().cloned());
        let rid = room_id.to_owned();
        let earliest = state
            .db
            .read(move |c| ev_store::forward_extremities(c, &rid))
            .await
            .unwrap_or_default();
        let path = format!(
            "/_matrix/federation/v1/get_missing_events/{}",
            percent_encode(room_id)
        );
        // No depth floor: events sent while another server had not yet seen our join can be
        // shallower than it, and they belong in our timeline too. History before our join
        // comes along with them, up to the budget of the run.
        let body = json!({
            "earliest_events": earliest,
            "latest_events": latest,
            "limit": MISSING_EVENTS_LIMIT,
        });
        for server in candidates(state, room_id, first)
            .await
            .into_iter()
            .take(MAX_SERVERS_ASKED)
        {
            let key = format!("gap {server} {}", first.event_id);
            if state.inbound.recently_failed(&key) {
                continue;
            }
            // However many events the server sends, no more than were asked for are read.
            let cap = gaps.room_for(MISSING_EVENTS_LIMIT);
            let fields = [("events", cap)];
            let Some(mut lists) = get_lists(
                state,
                client,
                &server,
                Method::POST,
                &path,
                Some(body.clone()),
                &fields,
            )
            .await
            else {
                state.inbound.note_failure(key);
                continue;
            };
            let events = lists.swap_remove(0);
            gaps.taken += events.len();
            if events.is_empty() {
                state.inbound.note_failure(key);
                continue;
            }
            let n = hold_fetched(state, room_id, &server, events).await;
            gaps.fetched += n;
            got += n;
            if n > 0 {
                break;
            }
        }
        if got > 0 {
            return got;
        }
    }

    // Prev events that the gap did not bring: learn the state after them instead, which
    // places the waiting event but leaves the history behind it out. Only past the run's
    // history budget, or once the event has waited a while: a server that refuses the gap
    // now (it has not yet seen that this node is back in the room, say) gives it soon after.
    let budget_spent = gaps.fetched >= HISTORY_BUDGET;
    let patience = now_ms() - STATE_FALLBACK_AFTER.as_millis() as i64;
    let mut fetches = 0;
    for (ev, missing) in waiting {
        if fetches >= MAX_STATE_FETCHES_PER_ROUND {
            break;
        }
        if !gaps.asked.contains(&ev.event_id) || !(budget_spent || ev.received_ts <= patience) {
            continue;
        }
        for prev in &missing.prev {
            let key = format!("state {prev}");
            if fetches >= MAX_STATE_FETCHES_PER_ROUND || state.inbound.recently_failed(&key) {
                continue;
            }
            if gaps.room_for(MAX_FETCHED_EVENTS) == 0 {
                return got;
            }
            fetches += 1;
            let mut placed = false;
            for server in candidates(state, room_id, ev)
                .await
                .into_iter()
                .take(MAX_SERVERS_ASKED)
            {
                if state_at(state, client, &server, room_id, prev, gaps).await {
                    placed = true;
                    break;
                }
            }
            if placed {
                got += 1;
            } else {
                state.inbound.note_failure(key);
            }
        }
    }
    got
}

/// Learns the state before `event_id` from `server`, stores it (checked against its auth
/// chain) and the event itself as an outlier with that state. Returns whether it worked.
async fn state_at(
    state: &AppState,
    client: &FederationClient,
    server: &str,
    room_id: &str,
    event_id: &str,
    gaps: &mut Gaps,
) -> bool {
    let path = format!(
        "/_matrix/federation/v1/state/{}?{}",
        percent_encode(room_id),
        query_string([("event_id", event_id)])
    );
    let cap = gaps.room_for(MAX_FETCHED_EVENTS);
    let fields = [("auth_chain", cap), ("pdus", cap)];
    let Some(mut lists) = get_lists(state, client, server, Method::GET, &path, None, &fields).await
    else {
        return false;
    };
    let state_pdus = lists.pop().unwrap_or_default();
    let chain = lists.pop().unwrap_or_default();
    gaps.taken += chain.len() + state_pdus.len();
    let path = format!("/_matrix/federation/v1/event/{}", percent_encode(event_id));
    let Some(event) = get_json(state, client, server, &path).await else {
        return false;
    };
    let Some(pdu) = event["pdus"].get(0).cloned() else {
        return false;
    };
    let (rid, wanted) = (room_id.to_owned(), event_id.to_owned());
    let outcome = state
        .db
        .write(move |txn| {
            let Some(rules) = remote::known_room_rules(txn, &rid)? else {
                return Ok(false);
            };
            // Every event of the reported state must verify, each once.
            let mut state_events = Vec::new();
            for pdu in state_pdus {
                let Some(event) = verified(pdu, &rid, &rules) else {
                    return Ok(false);
                };
                state_events.push(event);
            }
            let mut everything: Vec<_> = chain
                .into_iter()
                .filter_map(|p| verified(p, &rid, &rules))
                .collect();
            everything.extend(state_events.iter().cloned());
            store_outliers_in(txn, &rid, everything)?;
            let mut state_map = StateMap::new();
            for (id, obj) in &state_events {
                // Only state events this node holds unrejected (checked above) count.
                match ev_store::get_event(txn, id.as_str())? {
                    Some(ev) if !ev.rejected => {}
                    _ => return Ok(false),
                }
                if let (Some(ty), Some(key)) = (str_field(obj, "type"), str_field(obj, "state_key"))
                {
                    state_map.insert((ty.to_owned(), key.to_owned()), id.to_string());
                }
            }
            let Some((id, obj)) = verified(pdu, &rid, &rules) else {
                return Ok(false);
            };
            if id.as_str() != wanted {
                return Ok(false);
            }
            let outcome = remote::store_with_state(txn, &rid, &id, &obj, &state_map)?;
            Ok(!matches!(outcome, Accepted::Missing(_)))
        })
        .await;
    matches!(outcome, Ok(true))
}

/// Verifies a fetched PDU of the room.
pub(crate) fn verified(
    pdu: Value,
    room_id: &str,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Option<(OwnedEventId, CanonicalJsonObject)> {
    let obj: CanonicalJsonObject = serde_json::from_value(pdu).ok()?;
    if str_field(&obj, "room_id").is_some_and(|r| r != room_id) {
        return None;
    }
    let (id, obj) = remote::verify_pdu(obj, rules).ok()?;
    belongs_to(&id, &obj, room_id).then_some((id, obj))
}

/// Whether a verified event is of the room: it names the room, or (from room version 12 on,
/// where the create event has no room id) it is the create event the room id is made from.
pub(crate) fn belongs_to(id: &EventId, obj: &CanonicalJsonObject, room_id: &str) -> bool {
    match str_field(obj, "room_id") {
        Some(r) => r == room_id,
        None => room_id
            .strip_prefix('!')
            .is_some_and(|own| id.as_str().strip_prefix('$') == Some(own)),
    }
}

/// Stores fetched auth-chain or state events as outliers, each once its own auth events are
/// here (PDUs of other rooms or that fail verification are dropped). Returns how many were
/// stored.
async fn store_outliers(state: &AppState, room_id: &str, pdus: Vec<Value>) -> usize {
    let rid = room_id.to_owned();
    state
        .db
        .write(move |txn| {
            let Some(rules) = remote::known_room_rules(txn, &rid)? else {
                return Ok(0);
            };
            let events = pdus
                .into_iter()
                .take(MAX_FETCHED_EVENTS)
                .filter_map(|p| verified(p, &rid, &rules))
                .collect();
            store_outliers_in(txn, &rid, events)
        })
        .await
        .unwrap_or(0)
}

/// [`store_outliers`] inside a write transaction, for events already verified as the room's:
/// each is stored once its auth events are here. Auth chains come in any order, so this
/// repeats until nothing moves.
pub(crate) fn store_outliers_in(
    txn: &mut WriteTxn<'_>,
    room_id: &str,
    events: Vec<(OwnedEventId, CanonicalJsonObject)>,
) -> Result<usize> {
    let mut todo = events;
    let mut stored = 0;
    loop {
        let mut left = Vec::new();
        let before = stored;
        for (id, obj) in todo {
            match remote::store_outlier(txn, room_id, &id, &obj)? {
                Accepted::Missing(_) => left.push((id, obj)),
                Accepted::Known => {}
                _ => stored += 1,
            }
        }
        if left.is_empty() || stored == before {
            return Ok(stored);
        }
        todo = left;
    }
}

/// Puts fetched timeline events in the holding area (the next pass places them).
async fn hold_fetched(state: &AppState, room_id: &str, server: &str, pdus: Vec<Value>) -> usize {
    let (rid, from) = (room_id.to_owned(), server.to_owned());
    state
        .db
        .write(move |txn| {
            let Some(rules) = remote::known_room_rules(txn, &rid)? else {
                return Ok(0);
            };
            let mut held = 0;
            for pdu in pdus.into_iter().take(MISSING_EVENTS_LIMIT) {
                let Some((id, obj)) = verified(pdu, &rid, &rules) else {
                    continue;
                };
                if ev_store::get_event(txn, id.as_str())?
                    .is_some_and(|e| e.stream.is_some() || e.rejected || e.state_after.is_some())
                    || staged::is_staged(txn, id.as_str())?
                {
                    continue;
                }
                if hold(txn, &rid, &from, &id, &obj)?.is_none() {
                    held += 1;
                }
            }
            Ok(held)
        })
        .await
        .unwrap_or(0)
}

/// Fetches the events between `earliest` (what this node has) and `latest` from `server` and
/// lets them wait for their place: used after joining a room again, for what happened while
/// this node was away.
pub(crate) async fn fill_gap(
    state: &AppState,
    client: &FederationClient,
    server: &str,
    room_id: &str,
    earliest: Vec<String>,
    latest: &str,
) {
    let path = format!(
        "/_matrix/federation/v1/get_missing_events/{}",
        percent_encode(room_id)
    );
    let body = json!({
        "earliest_events": earliest,
        "latest_events": [latest],
        "limit": MISSING_EVENTS_LIMIT,
    });
    let fields = [("events", MISSING_EVENTS_LIMIT)];
    if let Some(mut lists) = get_lists(
        state,
        client,
        server,
        Method::POST,
        &path,
        Some(body),
        &fields,
    )
    .await
    {
        let events = lists.swap_remove(0);
        if hold_fetched(state, room_id, server, events).await > 0 {
            kick(state, room_id);
        }
    }
}

/// A federation GET's JSON answer, if it was a 200. Waits at most [`FETCH_TIMEOUT`].
async fn get_json(
    state: &AppState,
    client: &FederationClient,
    server: &str,
    path: &str,
) -> Option<Value> {
    let answer = client
        .request_within(server, Method::GET, path, None, FETCH_TIMEOUT)
        .await
        .map(|resp| (resp.status, resp.body));
    fetched(state, server, path, answer)
}

/// The arrays `fields` names in a federation answer, each cut to its length as it is read,
/// if the answer was a 200. Waits at most [`FETCH_TIMEOUT`].
async fn get_lists(
    state: &AppState,
    client: &FederationClient,
    server: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    fields: &[(&str, usize)],
) -> Option<Vec<Vec<Value>>> {
    let answer = client
        .request_lists_within(server, method, path, body, fields, FETCH_TIMEOUT)
        .await;
    fetched(state, server, path, answer)
}

/// What a fetch brought, if the server answered 200; notes whether it answered at all.
fn fetched<T>(
    state: &AppState,
    server: &str,
    path: &str,
    answer: Result<(StatusCode, T)>,
) -> Option<T> {
    state.inbound.heard_from(server, answer.is_ok());
    match answer {
        Ok((StatusCode::OK, found)) => Some(found),
        Ok((status, _)) => {
            tracing::debug!(%server, %path, %status, "fetch refused");
            None
        }
        Err(e) => {
            tracing::debug!(%server, %path, error = %e, "fetch failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, sync::Arc};

    use serde_json::Map;

    use super::*;
    use crate::{
        config::{Config, PasswordCost},
        rooms::{
            EventTemplate,
            create::CreateRoomRequest,
            graph::{self, RoomCtx, version_rules},
            membership::MembershipAction,
        },
        services::Services,
        storage::state as state_store,
    };

    /// A node's services in a fresh directory, removed when dropped.
    struct TempNode(PathBuf, Arc<Services>);

    impl Drop for TempNode {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open_node() -> TempNode {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).expect("random");
        let dir = std::env::temp_dir().join(format!(
            "neurite-inbound-{}",
            data_encoding::HEXLOWER.encode(&name)
        ));
        let mut config = Config::new(&dir);
        config.password_cost = PasswordCost::TESTING;
        let services = Services::open(config).expect("open");
        TempNode(dir, services)
    }

    /// A seeded shuffle (splitmix64), so a failing order can be replayed.
    fn shuffle<T>(items: &mut [T], seed: u64) {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for i in (1..items.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    fn message(body: &str) -> EventTemplate {
        EventTemplate::message(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": body }),
        )
    }

    /// A room with a fork: from one point, Bob sets the topic and talks while Alice demotes
    /// him and sets the topic too; a last message of Alice's cites both branches.
    async fn forked_room(a: &Arc<Services>) -> (String, Vec<Value>) {
        let alice = a.accounts.register("alice", None).await.expect("alice");
        let bob = a.accounts.register("bob", None).await.expect("bob");
        let room = a
            .rooms
            .create_room(
                &alice,
                CreateRoomRequest {
                    preset: Some("public_chat".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("room")
            .to_string();
        a.rooms
            .change_membership(&bob, &room, &bob, MembershipAction::Join, None, Map::new())
            .await
            .expect("join");
        // Room version 12: the creator's power is implied and may not be listed.
        let b_id = bob.to_string();
        let levels = move |bob_level: i64| {
            EventTemplate::state(
                "m.room.power_levels",
                "",
                json!({ "users": { b_id.clone(): bob_level },
                        "state_default": 50, "events_default": 0 }),
            )
        };
        a.rooms
            .send(&alice, &room, levels.clone()(50), None)
            .await
            .expect("promote bob");
        let (identity, r, al, bo) = (a.identity.clone(), room.clone(), alice.clone(), bob.clone());
        a.db.write(move |txn| {
            let fork = RoomCtx::load(txn, &r)?;
            let mut left = fork.clone();
            let topic = |t: &str| EventTemplate::state("m.room.topic", "", json!({ "topic": t }));
            graph::append(txn, &mut left, &identity, &bo, &topic("Bob's"), None)?;
            graph::append(txn, &mut left, &identity, &bo, &message("left"), None)?;
            let mut right = fork;
            graph::append(txn, &mut right, &identity, &al, &levels(0), None)?;
            graph::append(txn, &mut right, &identity, &al, &topic("Alice's"), None)?;
            graph::append(txn, &mut right, &identity, &al, &message("right"), None)?;
            Ok(())
        })
        .await
        .expect("fork");
        a.rooms
            .send(&alice, &room, message("merged"), None)
            .await
            .expect("merge");
        let r = room.clone();
        let events =
            a.db.read(move |c| ev_store::room_events_between(c, &r, 0, i64::MAX, 1000, false))
                .await
                .expect("events");
        let pdus = events
            .iter()
            .map(|e| serde_json::from_str(&e.json).expect("json"))
            .collect();
        (room, pdus)
    }

    /// What a node ends with: its current state and the ids of its timeline.
    async fn outcome(node: &Arc<Services>, room: &str) -> (StateMap, Vec<String>) {
        let r = room.to_owned();
        node.db
            .read(move |c| {
                let state = state_store::current_state(c, &r)?;
                let mut ids: Vec<String> =
                    ev_store::room_events_between(c, &r, 0, i64::MAX, 1000, false)?
                        .into_iter()
                        .map(|e| e.event_id)
                        .collect();
                ids.sort();
                Ok((state, ids))
            })
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn the_same_events_in_any_order_give_the_same_state_and_timeline() {
        let a = open_node();
        let (room, pdus) = forked_room(&a.1).await;
        let origin = a.1.identity.server_name().to_string();
        let expected = outcome(&a.1, &room).await;
        assert_eq!(expected.1.len(), pdus.len());

        let mut orders: Vec<Vec<Value>> = vec![pdus.clone(), pdus.iter().rev().cloned().collect()];
        for seed in 1..=8 {
            let mut order = pdus.clone();
            shuffle(&mut order, seed);
            orders.push(order);
        }
        let mut states = Vec::new();
        for (n, order) in orders.into_iter().enumerate() {
            let d = open_node();
            let (r, o) = (room.clone(), origin.clone());
            let local = d.1.identity.server_name().to_string();
            let events: Vec<(OwnedEventId, CanonicalJsonObject)> = {
                let rules = version_rules("12").expect("v12").1;
                order
                    .into_iter()
                    .map(|p| verified(p, &room, &rules).expect("verifies"))
                    .collect()
            };
            d.1.db
                .write(move |txn| {
                    ev_store::insert_room(txn, &r, "12", "")?;
                    take_in(txn, &r, &o, &local, events)
                })
                .await
                .expect("take in");
            let (_, waiting) = drain(&d.1, &room).await.expect("drain");
            assert!(
                waiting.is_empty(),
                "order {n}: events still wait: {waiting:?}"
            );
            let got = outcome(&d.1, &room).await;
            assert_eq!(got.1, expected.1, "order {n}: timeline differs");
            states.push(got.0);
        }
        // Every order resolves the fork the same way (the sender of the original graph built
        // the merge on its own current state, which need not be the resolved one).
        assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:#?}");
        let topic = &states[0][&("m.room.topic".to_owned(), String::new())];
        let topic_json =
            a.1.db
                .read_blocking(|c| ev_store::get_event_json(c, topic))
                .expect("read")
                .expect("topic stored");
        assert!(
            topic_json.contains("Alice's"),
            "the demotion wins: {topic_json}"
        );
    }

    /// Alice's room on `a`, forked by `make` (given the room's context at the fork point),
    /// and every event of it in stream order, verified as another server would: its type,
    /// id and object.
    async fn forks_of_alice(
        a: &TempNode,
        make: impl FnOnce(
            &mut WriteTxn<'_>,
            &RoomCtx,
            &crate::identity::Identity,
            &ruma::UserId,
        ) -> Result<()>
        + Send
        + 'static,
    ) -> (String, Vec<(String, OwnedEventId, CanonicalJsonObject)>) {
        let alice = a.1.accounts.register("alice", None).await.expect("alice");
        let room =
            a.1.rooms
                .create_room(&alice, CreateRoomRequest::default())
                .await
                .expect("room")
                .to_string();
        let (r, identity) = (room.clone(), a.1.identity.clone());
        a.1.db
            .write(move |txn| {
                let fork = RoomCtx::load(txn, &r)?;
                make(txn, &fork, &identity, &alice)
            })
            .await
            .expect("forks");
        let r = room.clone();
        let events =
            a.1.db
                .read(move |c| ev_store::room_events_between(c, &r, 0, i64::MAX, 1000, false))
                .await
                .expect("events");
        let rules = version_rules("12").expect("v12").1;
        let pdus = events
            .iter()
            .map(|e| {
                let pdu = serde_json::from_str(&e.json).expect("json");
                let (id, obj) = verified(pdu, &room, &rules).expect("verifies");
                (e.event_type.clone(), id, obj)
            })
            .collect();
        (room, pdus)
    }

    #[tokio::test]
    async fn messages_on_many_forks_of_one_state_store_no_new_state() {
        let a = open_node();
        // Twelve messages, each on its own fork of the same point.
        let (room, pdus) = forks_of_alice(&a, |txn, fork, identity, alice| {
            for i in 0..12 {
                let mut branch = fork.clone();
                let text = format!("branch {i}");
                graph::append(txn, &mut branch, identity, alice, &message(&text), None)?;
            }
            Ok(())
        })
        .await;
        let origin = a.1.identity.server_name().to_string();
        let (before, forks): (Vec<_>, Vec<_>) = pdus
            .into_iter()
            .partition(|(ty, _, _)| ty != "m.room.message");
        let strip = |v: Vec<(String, OwnedEventId, CanonicalJsonObject)>| -> Vec<_> {
            v.into_iter().map(|(_, id, obj)| (id, obj)).collect()
        };
        let (before, forks) = (strip(before), strip(forks));
        assert_eq!(forks.len(), 12);

        let d = open_node();
        let local = d.1.identity.server_name().to_string();
        let r = room.clone();
        let groups = |c: &rusqlite::Connection| -> Result<i64> {
            Ok(crate::storage::test_support::state_group_count(c)?)
        };
        let (at_fork, after) =
            d.1.db
                .write(move |txn| {
                    ev_store::insert_room(txn, &r, "12", "")?;
                    take_in(txn, &r, &origin, &local, before)?;
                    let at_fork = groups(txn)?;
                    let (results, waiting) = take_in(txn, &r, &origin, &local, forks)?;
                    assert!(!waiting && results.iter().all(|(_, r)| r.is_ok()));
                    Ok((at_fork, groups(txn)?))
                })
                .await
                .expect("take in");
        assert_eq!(after, at_fork, "messages stored new state groups");
        let got = outcome(&d.1, &room).await;
        assert_eq!(got, outcome(&a.1, &room).await);
    }

    /// More forks with states of their own than are resolved: the deepest count, whatever
    /// order the events arrive in. Seventy forks set the topic and then talk (one deeper);
    /// five more, made last, only set the topic. Resolving every fork, the latest topic (a
    /// shallow one) would win; with the deepest 64, a deep one does, on both nodes.
    #[tokio::test]
    async fn only_the_deepest_forks_make_the_current_state_in_any_order() {
        let a = open_node();
        let (room, typed) = forks_of_alice(&a, |txn, fork, identity, alice| {
            let topic = |t: String| EventTemplate::state("m.room.topic", "", json!({ "topic": t }));
            for i in 0..70 {
                let mut branch = fork.clone();
                let deep = topic(format!("deep {i}"));
                graph::append(txn, &mut branch, identity, alice, &deep, None)?;
                graph::append(txn, &mut branch, identity, alice, &message("on top"), None)?;
            }
            for j in 0..5 {
                let mut branch = fork.clone();
                let shallow = topic(format!("shallow {j}"));
                graph::append(txn, &mut branch, identity, alice, &shallow, None)?;
            }
            Ok(())
        })
        .await;
        let first_fork = typed
            .iter()
            .position(|(ty, _, _)| ty == "m.room.topic")
            .expect("a fork");
        let pdus: Vec<(OwnedEventId, CanonicalJsonObject)> =
            typed.into_iter().map(|(_, id, obj)| (id, obj)).collect();
        let origin = a.1.identity.server_name().to_string();
        let mut topics = Vec::new();
        for reversed in [false, true] {
            let d = open_node();
            let (r, origin, local) = (
                room.clone(),
                origin.clone(),
                d.1.identity.server_name().to_string(),
            );
            let (before, forks) = pdus.split_at(first_fork);
            let (before, mut forks) = (before.to_vec(), forks.to_vec());
            if reversed {
                // The other way round, each event still after those it cites.
                forks.reverse();
                forks.sort_by_key(|(_, obj)| match obj.get("depth") {
                    Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
                    _ => 0,
                });
            }
            d.1.db
                .write(move |txn| {
                    ev_store::insert_room(txn, &r, "12", "")?;
                    take_in(txn, &r, &origin, &local, before)?;
                    let (_, waiting) = take_in(txn, &r, &origin, &local, forks)?;
                    assert!(!waiting, "every fork was placed");
                    Ok(())
                })
                .await
                .expect("take in");
            let (state, _) = outcome(&d.1, &room).await;
            let topic_id = state
                .get(&("m.room.topic".to_owned(), String::new()))
                .cloned()
                .expect("a topic");
            let json =
                d.1.db
                    .read(move |c| ev_store::get_event_json(c, &topic_id))
                    .await
                    .expect("read")
                    .expect("topic event");
            topics.push(
                serde_json::from_str::<Value>(&json).expect("json")["content"]["topic"].clone(),
            );
        }
        assert_eq!(
            topics[0], topics[1],
            "the order the forks came in changed the state"
        );
        let topic = topics[0].as_str().unwrap_or_default();
        assert!(
            topic.starts_with("deep "),
            "a shallow fork counted: {topic}"
        );
    }

    #[tokio::test]
    async fn events_rejected_for_a_missing_auth_event_by_earlier_versions_are_recovered() {
        let a = open_node();
        let (room, pdus) = forked_room(&a.1).await;
        let origin = a.1.identity.server_name().to_string();
        let expected = outcome(&a.1, &room).await;
        let rules = version_rules("12").expect("v12").1;
        let mut events: Vec<(OwnedEventId, CanonicalJsonObject)> = pdus
            .into_iter()
            .map(|p| verified(p, &room, &rules).expect("verifies"))
            .collect();
        // Bob's join is what this node never got in time.
        let join_at = events
            .iter()
            .position(|(_, o)| {
                str_field(o, "type") == Some("m.room.member")
                    && str_field(o, "state_key").is_some_and(|k| k.starts_with("@bob:"))
            })
            .expect("bob's join");
        let join = events.remove(join_at);

        // What an earlier version wrote: everything after the join rejected, without state.
        let d = open_node();
        let local = d.1.identity.server_name().to_string();
        let (r, o) = (room.clone(), origin.clone());
        d.1.db
            .write(move |txn| {
                ev_store::insert_room(txn, &r, "12", "")?;
                take_in(txn, &r, &o, &local, events)?;
                for ev in staged::in_room(txn, &r, 1000)? {
                    let obj: CanonicalJsonObject = serde_json::from_str(&ev.json)?;
                    let id = EventId::parse(&ev.event_id).expect("id");
                    let pdu = crate::rooms::pdu::Pdu::from_object(id, &obj)?;
                    let prevs: Vec<String> =
                        pdu.data.prev_events.iter().map(|e| e.to_string()).collect();
                    ev_store::insert_event(
                        txn,
                        &ev_store::NewEvent {
                            event_id: &ev.event_id,
                            room_id: &r,
                            stream: None,
                            event_type: str_field(&obj, "type").unwrap_or_default(),
                            state_key: str_field(&obj, "state_key"),
                            sender: str_field(&obj, "sender").unwrap_or_default(),
                            origin_server_ts: 0,
                            depth: ev.depth,
                            json: &ev.json,
                            state_before: None,
                            state_after: None,
                            prev_state: None,
                            relates_to: None,
                            rel_type: None,
                            txn_device: None,
                            txn_id: None,
                            prev_events: &prevs,
                            outlier: false,
                            rejected: true,
                        },
                    )?;
                    staged::unstage(txn, &ev.event_id)?;
                }
                Ok(())
            })
            .await
            .expect("old database");
        let before = outcome(&d.1, &room).await;
        assert!(before.1.len() < expected.1.len());

        // The migration turns the rejections back into waiting events; the join arrives.
        let local = d.1.identity.server_name().to_string();
        let r = room.clone();
        d.1.db
            .write(move |txn| {
                staged::recover_rejected_events(txn)?;
                take_in(txn, &r, &origin, &local, vec![join])
            })
            .await
            .expect("recover");
        let (_, waiting) = drain(&d.1, &room).await.expect("drain");
        assert!(waiting.is_empty(), "events still wait: {waiting:?}");
        assert_eq!(outcome(&d.1, &room).await, expected);
    }
}
