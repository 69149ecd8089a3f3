//! Accepting events made elsewhere into a room's graph: the spec's checks on receipt of a PDU
//! (signatures and hash, auth against the event's auth events, against the state before it,
//! soft-fail against the current state), state resolution v2 across forks, and the new
//! current state.
//!
//! It stays one file (about 800 lines besides its tests): accepting a PDU is one pipeline
//! whose steps (checks on receipt, auth, soft-fail, state resolution, the new current state)
//! share the room's rules and state maps, and it is read in order against the spec.

use std::collections::{HashMap, HashSet};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    signatures::{Verified, reference_hash, verify_event},
    state_res::{self, utils::event_id_set::EventIdSet},
};
use rusqlite::Connection;
use serde_json::Value;

use super::{
    graph::{Fetches, load_pdu},
    pdu::Pdu,
};
use crate::{
    error::{Error, Result},
    identity::public_key_map,
    storage::{
        WriteTxn,
        events::{self as ev_store, NewEvent},
        state::{self as state_store, StateMap},
    },
};

/// Most rejected events kept per room; beyond that, a rejected event is answered but not
/// stored (an event citing it then waits for it, like any other missing event).
pub const MAX_REJECTED_PER_ROOM: i64 = 1_000;

/// Most distinct states of forward extremities resolved into a room's current state.
pub const MAX_RESOLVED_STATES: usize = 64;

/// What became of a received PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored in the timeline at this stream position.
    Stored(i64),
    /// Stored outside the timeline (an auth-chain event, or one whose state was learnt from
    /// another server).
    Outlier,
    /// Already known.
    Known,
    /// Failed the authorization rules on complete data; kept only as rejected.
    Rejected(String),
    /// Allowed by its own history but not by the current state: kept out of the timeline.
    SoftFailed(String),
    /// Depends on events this node lacks: nothing was stored.
    Missing(Missing),
}

/// The events a PDU depends on that this node lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    /// Auth events not stored at all.
    pub auth: Vec<String>,
    /// Prev events not stored with a known state after them.
    pub prev: Vec<String>,
}

impl Missing {
    fn is_empty(&self) -> bool {
        self.auth.is_empty() && self.prev.is_empty()
    }
}

/// Largest PDU accepted: the whole event as received, signatures and all, as canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// Most prev events an incoming event may cite: a member who forks the room a thousand ways
/// in one event would make every later state resolution slow (this node cites at most 10).
pub const MAX_PREV_EVENTS: usize = 20;
/// Most auth events an incoming event may cite (the auth rules need at most five).
pub const MAX_AUTH_EVENTS: usize = 10;

/// Checks a PDU's size, signatures and content hash; returns its event id and the object to
/// use (redacted if the content hash does not match).
///
/// Only the signatures the checks need are kept (those of the servers that must sign the
/// event, under the one key id their names encode): the reference hash leaves signatures
/// out, so anything else there would be stored and passed on unchecked.
pub fn verify_pdu(
    obj: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(OwnedEventId, CanonicalJsonObject), String> {
    verify_pdu_keyed(obj, rules).map_err(|(_, e)| e)
}

/// [`verify_pdu`], whose error also carries the event's id when it has one (a refused PDU is
/// answered under it in `/send`).
pub fn verify_pdu_keyed(
    mut obj: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(OwnedEventId, CanonicalJsonObject), (String, String)> {
    let refuse = |obj: &CanonicalJsonObject, why: String| {
        let id = reference_hash(obj, rules)
            .map(|hash| format!("${hash}"))
            .unwrap_or_default();
        (id, why)
    };
    let size = serde_json::to_vec(&obj)
        .map_err(|e| (String::new(), e.to_string()))?
        .len();
    if size > MAX_PDU_BYTES {
        return Err(refuse(
            &obj,
            format!("Event is larger than {MAX_PDU_BYTES} bytes"),
        ));
    }
    for (field, most) in [
        ("prev_events", MAX_PREV_EVENTS),
        ("auth_events", MAX_AUTH_EVENTS),
    ] {
        if let Some(ruma::CanonicalJsonValue::Array(ids)) = obj.get(field)
            && ids.len() > most
        {
            return Err(refuse(
                &obj,
                format!("Event cites more than {most} {field}"),
            ));
        }
    }
    obj.remove("unsigned");
    let servers =
        match ruma::signatures::required_server_signatures_to_verify_event(&obj, &rules.signatures)
        {
            Ok(servers) => servers,
            Err(e) => return Err(refuse(&obj, e.to_string())),
        };
    let mut keys = ruma::signatures::PublicKeyMap::new();
    for server in servers {
        let Some(map) = public_key_map(server.as_str()) else {
            return Err(refuse(&obj, format!("{server} is not a Neurite server")));
        };
        keys.extend(map);
    }
    if let Some(ruma::CanonicalJsonValue::Object(signatures)) = obj.get_mut("signatures") {
        signatures.retain(|server, by_key| {
            let Some(wanted) = keys.get(server) else {
                return false;
            };
            if let ruma::CanonicalJsonValue::Object(by_key) = by_key {
                by_key.retain(|key_id, _| wanted.contains_key(key_id));
            }
            true
        });
    }
    let verified = match verify_event(&keys, &obj, rules) {
        Ok(verified) => verified,
        Err(e) => return Err(refuse(&obj, format!("signature: {e}"))),
    };
    let hash = reference_hash(&obj, rules).map_err(|e| (String::new(), e.to_string()))?;
    let event_id =
        EventId::parse(format!("${hash}")).map_err(|e| (String::new(), e.to_string()))?;
    if verified == Verified::Signatures {
        obj = ruma::canonical_json::redact(obj, &rules.redaction, None)
            .map_err(|e| (event_id.to_string(), e.to_string()))?;
    }
    Ok((event_id, obj))
}

fn kind_and_key(obj: &CanonicalJsonObject) -> (String, Option<String>) {
    let get = |k: &str| match obj.get(k) {
        Some(ruma::CanonicalJsonValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    (get("type").unwrap_or_default(), get("state_key"))
}

fn new_event<'a>(
    pdu: &'a Pdu,
    room_id: &'a str,
    json: &'a str,
    event_type: &'a str,
    prevs: &'a [String],
) -> NewEvent<'a> {
    NewEvent {
        event_id: pdu.event_id.as_str(),
        room_id,
        stream: None,
        event_type,
        state_key: pdu.data.state_key.as_deref(),
        sender: pdu.data.sender.as_str(),
        origin_server_ts: i64::from(pdu.data.origin_server_ts.get()),
        depth: i64::try_from(u64::from(pdu.data.depth)).unwrap_or(i64::MAX),
        json,
        state_before: None,
        state_after: None,
        prev_state: None,
        relates_to: None,
        rel_type: None,
        txn_device: None,
        txn_id: None,
        prev_events: prevs,
        outlier: true,
        rejected: false,
    }
}

/// Whether a stored event is settled: in the timeline, rejected, or an outlier whose state is
/// known. Anything else (an outlier with no state) may still be promoted.
pub(crate) fn settled(ev: &ev_store::StoredEvent) -> bool {
    ev.stream.is_some() || ev.rejected || ev.state_after.is_some()
}

/// The auth events of `pdu` that this node does not have at all. From room version 12 on,
/// the create event is one of them without being listed: its id is the room id's.
fn missing_auth(conn: &Connection, pdu: &Pdu, rules: &RoomVersionRules) -> Result<Vec<String>> {
    let mut wanted: Vec<OwnedEventId> = pdu.data.auth_events.to_vec();
    if rules.authorization.room_create_event_id_as_room_id
        && let Some(room_id) = &pdu.data.room_id
        && let Ok(create) = EventId::parse(format!("${}", room_id.strip_sigil()))
    {
        wanted.push(create);
    }
    let mut out = Vec::new();
    for a in wanted {
        if ev_store::get_event(conn, a.as_str())?.is_none() {
            out.push(a.to_string());
        }
    }
    Ok(out)
}

/// Checks an event's room and its auth against its own auth events (which must all be
/// here). `Ok(None)` when it passes.
fn check_own_auth(
    conn: &Connection,
    room_id: &str,
    pdu: &Pdu,
    rules: &RoomVersionRules,
) -> Result<Option<String>> {
    if pdu
        .data
        .room_id
        .as_ref()
        .is_some_and(|r| r.as_str() != room_id)
    {
        return Ok(Some("event is for another room".into()));
    }
    // A database error must not pass for a missing event.
    let fetches = Fetches::default();
    let fetch_event = |id: &EventId| fetches.pdu(conn, id.as_str());
    let outcome =
        state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event);
    fetches.finish()?;
    Ok(outcome.err())
}

/// Stores an event outside the timeline with no known state: an event of an auth chain or
/// of a room state learnt from another server. Its own auth events must be here (else
/// [`Accepted::Missing`]); it is checked against them and kept as rejected if it fails.
pub fn store_outlier(
    conn: &Connection,
    room_id: &str,
    event_id: &EventId,
    obj: &CanonicalJsonObject,
) -> Result<Accepted> {
    if ev_store::get_event(conn, event_id.as_str())?.is_some() {
        return Ok(Accepted::Known);
    }
    let pdu = Pdu::from_object(event_id.to_owned(), obj)?;
    let rules = room_rules(conn, room_id)?;
    let auth = missing_auth(conn, &pdu, &rules)?;
    if !auth.is_empty() {
        return Ok(Accepted::Missing(Missing {
            auth,
            prev: Vec::new(),
        }));
    }
    let verdict = check_own_auth(conn, room_id, &pdu, &rules)?;
    let json = serde_json::to_string(obj)?;
    let (ty, _) = kind_and_key(obj);
    let prevs: Vec<String> = pdu.data.prev_events.iter().map(|e| e.to_string()).collect();
    let mut row = new_event(&pdu, room_id, &json, &ty, &prevs);
    row.rejected = verdict.is_some();
    ev_store::insert_event(conn, &row)?;
    Ok(match verdict {
        Some(why) => {
            tracing::info!(event = %event_id, reason = %why, "rejected auth-chain event");
            Accepted::Rejected(why)
        }
        None => Accepted::Outlier,
    })
}

fn room_rules(conn: &Connection, room_id: &str) -> Result<RoomVersionRules> {
    known_room_rules(conn, room_id)?.ok_or_else(|| Error::Event(format!("unknown room {room_id}")))
}

/// The rules of a room's version, if this node knows the room.
pub(crate) fn known_room_rules(
    conn: &Connection,
    room_id: &str,
) -> Result<Option<RoomVersionRules>> {
    match ev_store::get_room(conn, room_id)? {
        Some(room) => Ok(Some(super::graph::version_rules(&room.room_version)?.1)),
        None => Ok(None),
    }
}

/// Records an event that this node cannot place in its own graph (its prev events are
/// beyond what it has), with the state before it as another server reported it: the event
/// becomes an outlier whose state is known, so events that follow it can be placed.
/// The reported state must already be stored; the event is checked against it.
pub fn store_with_state(
    txn: &mut WriteTxn<'_>,
    room_id: &str,
    event_id: &EventId,
    obj: &CanonicalJsonObject,
    state_before: &StateMap,
) -> Result<Accepted> {
    let known = ev_store::get_event(txn, event_id.as_str())?;
    if known.as_ref().is_some_and(settled) {
        return Ok(Accepted::Known);
    }
    let pdu = Pdu::from_object(event_id.to_owned(), obj)?;
    let rules = room_rules(txn, room_id)?;
    let auth = missing_auth(txn, &pdu, &rules)?;
    if !auth.is_empty() {
        return Ok(Accepted::Missing(Missing {
            auth,
            prev: Vec::new(),
        }));
    }
    let mut verdict = check_own_auth(txn, room_id, &pdu, &rules)?;
    if verdict.is_none() {
        verdict = check_against_state(txn, &pdu, &rules, state_before)?;
    }
    let (ty, state_key) = kind_and_key(obj);
    let before = state_store::create_state_group(txn, room_id, None, state_before)?;
    let after = match (&state_key, &verdict) {
        (Some(key), None) => state_store::create_state_group(
            txn,
            room_id,
            Some(before),
            &StateMap::from([((ty.clone(), key.clone()), event_id.to_string())]),
        )?,
        _ => before,
    };
    if known.is_some() {
        ev_store::set_outlier_state(txn, event_id.as_str(), before, after)?;
    } else {
        let json = serde_json::to_string(obj)?;
        let prevs: Vec<String> = pdu.data.prev_events.iter().map(|e| e.to_string()).collect();
        let mut row = new_event(&pdu, room_id, &json, &ty, &prevs);
        row.state_before = Some(before);
        row.state_after = Some(after);
        row.rejected = verdict.is_some();
        ev_store::insert_event(txn, &row)?;
    }
    if verdict.is_none()
        && ev_store::has_timeline_child(txn, event_id.as_str())?
        && let Some(ev) = ev_store::get_event(txn, event_id.as_str())?
    {
        promote(txn, &ev, &rules)?;
    }
    Ok(match verdict {
        Some(why) => Accepted::Rejected(why),
        None => Accepted::Outlier,
    })
}

/// Checks an event against a room state (its state before, or the current state).
fn check_against_state(
    conn: &Connection,
    pdu: &Pdu,
    rules: &RoomVersionRules,
    state: &StateMap,
) -> Result<Option<String>> {
    let fetches = Fetches::default();
    let fetch_state = |t: &StateEventType, k: &str| {
        let id = state.get(&(t.to_string(), k.to_owned()))?;
        fetches.pdu(conn, id)
    };
    let outcome =
        state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state);
    fetches.finish()?;
    Ok(outcome.err())
}

fn to_res_map(state: &StateMap) -> state_res::StateMap<OwnedEventId> {
    state
        .iter()
        .filter_map(|((ty, key), id)| {
            EventId::parse(id)
                .ok()
                .map(|id| ((StateEventType::from(ty.as_str()), key.clone()), id))
        })
        .collect()
}

fn from_res_map(state: state_res::StateMap<OwnedEventId>) -> StateMap {
    state
        .into_iter()
        .map(|((ty, key), id)| ((ty.to_string(), key), id.to_string()))
        .collect()
}

/// Resolves several room states into one with state resolution v2.
pub fn resolve_states(
    conn: &Connection,
    rules: &RoomVersionRules,
    states: &[StateMap],
) -> Result<StateMap> {
    if states.len() == 1 {
        return Ok(states[0].clone());
    }
    let maps: Vec<state_res::StateMap<OwnedEventId>> = states.iter().map(to_res_map).collect();
    let mut chains = Vec::new();
    for s in states {
        let chain = super::graph::auth_chain(conn, s.values().cloned())?;
        chains.push(
            chain
                .iter()
                .chain(s.values())
                .filter_map(|id| EventId::parse(id).ok())
                .collect::<EventIdSet<OwnedEventId>>(),
        );
    }
    // A failed read fails the whole resolution: a state resolved as if an event the
    // database could not read were missing would be wrong, and kept.
    let fetches = Fetches::default();
    let cache = std::cell::RefCell::new(HashMap::<OwnedEventId, Option<Pdu>>::new());
    let fetch = |id: &EventId| -> Option<Pdu> {
        if let Some(hit) = cache.borrow().get(id) {
            return hit.clone();
        }
        let loaded = fetches.keep(load_pdu(conn, id.as_str()))?;
        cache.borrow_mut().insert(id.to_owned(), loaded.clone());
        loaded
    };
    let subgraph =
        |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| -> Option<EventIdSet<OwnedEventId>> {
            fetches.keep(conflicted_subgraph(
                conn,
                conflicted
                    .values()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect(),
            ))
        };
    let v2 = rules
        .state_res
        .v2_rules()
        .ok_or_else(|| Error::Event("room version has no state resolution v2".into()))?;
    let resolved = state_res::resolve(
        &rules.authorization,
        v2,
        maps.iter(),
        chains,
        fetch,
        subgraph,
    );
    fetches.finish()?;
    let resolved = resolved.map_err(|e| Error::Event(format!("state resolution: {e}")))?;
    Ok(from_res_map(resolved))
}

/// Events on auth-event paths between two conflicted events (room version 12's
/// "conflicted state subgraph").
///
/// The walk keeps its own stack rather than recursing: a peer chooses how deep an auth chain
/// is, and the thread this runs on has a small stack.
fn conflicted_subgraph(
    conn: &Connection,
    conflicted: HashSet<String>,
) -> Result<EventIdSet<OwnedEventId>> {
    // The auth events of each event met (empty for events this node does not have).
    let mut auth_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut load = |id: &str| -> Result<Vec<String>> {
        if let Some(auth) = auth_of.get(id) {
            return Ok(auth.clone());
        }
        let auth: Vec<String> = load_pdu(conn, id)?
            .map(|pdu| pdu.data.auth_events.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        auth_of.insert(id.to_owned(), auth.clone());
        Ok(auth)
    };
    // reaches[x]: x is conflicted or some conflicted event is among its auth ancestors.
    // Filled in depth-first post-order: an event is settled once all its auth events are.
    let mut reaches: HashMap<String, bool> = HashMap::new();
    for c in &conflicted {
        let mut stack = vec![(c.clone(), false)];
        while let Some((id, expanded)) = stack.pop() {
            if reaches.contains_key(&id) {
                continue;
            }
            let auth = load(&id)?;
            if expanded {
                let r = conflicted.contains(&id)
                    || auth
                        .iter()
                        .any(|a| reaches.get(a).copied().unwrap_or(false));
                reaches.insert(id, r);
            } else {
                stack.push((id, true));
                stack.extend(
                    auth.into_iter()
                        .filter(|a| !reaches.contains_key(a))
                        .map(|a| (a, false)),
                );
            }
        }
    }
    // Walking down from each conflicted event, keep the ancestors from which another
    // conflicted event is reachable.
    let mut out = EventIdSet::new();
    let mut seen = HashSet::new();
    let mut todo: Vec<String> = conflicted.iter().cloned().collect();
    while let Some(id) = todo.pop() {
        if !reaches.get(&id).copied().unwrap_or(false) || !seen.insert(id.clone()) {
            continue;
        }
        if let Ok(eid) = EventId::parse(&id) {
            out.insert(eid);
        }
        todo.extend(load(&id)?);
    }
    Ok(out)
}

fn state_of_group(conn: &Connection, group: Option<i64>) -> Result<StateMap> {
    match group {
        Some(g) => state_store::load_state_group(conn, g),
        None => Ok(StateMap::new()),
    }
}

/// The spec's checks on receipt of a verified PDU, and its place in the graph.
///
/// Nothing is stored while an auth event or a prev event is missing ([`Accepted::Missing`]):
/// an event is rejected only when the authorization rules fail on complete data. A prev event
/// counts as present once the state after it is known (it is in the timeline, rejected, or
/// an outlier whose state another server reported).
pub fn accept_pdu(
    txn: &mut WriteTxn<'_>,
    room_id: &str,
    event_id: OwnedEventId,
    obj: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<Accepted> {
    let known = ev_store::get_event(txn, event_id.as_str())?;
    if known.as_ref().is_some_and(settled) {
        return Ok(Accepted::Known);
    }
    let pdu = Pdu::from_object(event_id.clone(), obj)?;
    let json = serde_json::to_string(obj)?;
    let (ty, state_key) = kind_and_key(obj);
    let prevs: Vec<String> = pdu.data.prev_events.iter().map(|e| e.to_string()).collect();

    // Everything it depends on must be here first.
    let mut missing = Missing {
        auth: missing_auth(txn, &pdu, rules)?,
        prev: Vec::new(),
    };
    let mut prev_states = Vec::new();
    let mut prev_groups = Vec::new();
    for p in &prevs {
        match ev_store::get_event(txn, p)? {
            // Prev events with the same state (messages after one state event) count once.
            Some(ev) if ev.state_after.is_some() => {
                if !prev_groups.contains(&ev.state_after) {
                    prev_groups.push(ev.state_after);
                    prev_states.push(state_of_group(txn, ev.state_after)?);
                }
            }
            _ => missing.prev.push(p.clone()),
        }
    }
    if !missing.is_empty() {
        return Ok(Accepted::Missing(missing));
    }
    // Prev events kept out of the timeline (soft-failed here, or known only with another
    // server's state) join it now that another server built on them: which events end up in
    // the timeline then does not depend on the order they arrived in.
    for p in &prevs {
        if let Some(ev) = ev_store::get_event(txn, p)?
            && ev.stream.is_none()
            && !ev.rejected
            && ev.state_after.is_some()
        {
            promote(txn, &ev, rules)?;
        }
    }
    // An outlier with no state so far is stored afresh, now with its place in the graph.
    if known.is_some() {
        ev_store::delete_outlier(txn, event_id.as_str())?;
    }

    // The state before the event: its prev events' states, resolved.
    let (state_before, before_group) = if prev_states.is_empty() {
        // The create event.
        (StateMap::new(), None)
    } else if prev_states.len() == 1 {
        (prev_states.remove(0), prev_groups[0])
    } else {
        let resolved = resolve_states(txn, rules, &prev_states)?;
        let group = state_store::create_state_group(txn, room_id, None, &resolved)?;
        (resolved, Some(group))
    };

    // Auth against its own auth events, then against the state before it. A rejected event
    // keeps the state before it as the state after it, so events citing it can be placed.
    let mut verdict = check_own_auth(txn, room_id, &pdu, rules)?;
    if verdict.is_none() {
        verdict = check_against_state(txn, &pdu, rules, &state_before)?;
    }
    if let Some(why) = verdict {
        // Rejected events are kept so that events citing them can be placed, but only so
        // many: anyone who can sign an event can have it rejected.
        if ev_store::count_rejected(txn, room_id)? >= MAX_REJECTED_PER_ROOM {
            tracing::info!(event = %event_id, reason = %why, "rejected incoming event (not kept)");
            return Ok(Accepted::Rejected(why));
        }
        let mut row = new_event(&pdu, room_id, &json, &ty, &prevs);
        row.state_before = before_group;
        row.state_after = before_group;
        row.rejected = true;
        ev_store::insert_event(txn, &row)?;
        tracing::info!(event = %event_id, reason = %why, "rejected incoming event");
        return Ok(Accepted::Rejected(why));
    }

    let mut state_after = before_group;
    let mut prev_state = None;
    if let Some(key) = &state_key {
        prev_state = state_before.get(&(ty.clone(), key.clone())).cloned();
        let change = StateMap::from([((ty.clone(), key.clone()), event_id.to_string())]);
        state_after = Some(state_store::create_state_group(
            txn,
            room_id,
            before_group,
            &change,
        )?);
    }

    // Soft-fail: allowed by its history, but not by the room as it is now. Not for an event
    // the timeline already builds on (history fetched after a join that cites it): another
    // server accepted it, and our own join follows it.
    let current = state_store::current_state(txn, room_id)?;
    if !ev_store::has_timeline_child(txn, event_id.as_str())?
        && let Some(why) = check_against_state(txn, &pdu, rules, &current)?
    {
        let mut row = new_event(&pdu, room_id, &json, &ty, &prevs);
        row.state_before = before_group;
        row.state_after = state_after;
        ev_store::insert_event(txn, &row)?;
        tracing::info!(event = %event_id, reason = %why, "soft-failed incoming event");
        return Ok(Accepted::SoftFailed(why));
    }

    let stream = txn.next_pos();
    let (relates_to, rel_type) = super::graph::relation_of(&pdu);
    let mut row = new_event(&pdu, room_id, &json, &ty, &prevs);
    row.outlier = false;
    row.stream = Some(stream);
    row.state_before = before_group;
    row.state_after = state_after;
    row.prev_state = prev_state.as_deref();
    row.relates_to = relates_to.as_deref();
    row.rel_type = rel_type.as_deref();
    ev_store::insert_event(txn, &row)?;
    ev_store::advance_extremities(txn, room_id, event_id.as_str(), &prevs)?;
    if ty == "m.room.redaction"
        && let Some(target) = &pdu.redacts
    {
        super::apply_redaction_with_rules(txn, rules, target.as_str(), event_id.as_str())?;
    }
    update_current_state(txn, room_id, rules, stream)?;
    crate::push::record_event(
        txn,
        room_id,
        rules,
        stream,
        &json,
        pdu.data.sender.as_str(),
        crate::push::thread_root(relates_to.as_deref(), rel_type.as_deref()),
    )?;
    Ok(Accepted::Stored(stream))
}

/// Puts an outlier whose state is known into the timeline, with those of its prev events
/// that are such outliers too (ancestors first): an event learnt with another server's state
/// may itself cite one. None becomes a forward extremity: the event that cites it follows.
fn promote(
    txn: &mut WriteTxn<'_>,
    ev: &ev_store::StoredEvent,
    rules: &RoomVersionRules,
) -> Result<()> {
    let mut chain = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![ev.clone()];
    while let Some(ev) = todo.pop() {
        if !seen.insert(ev.event_id.clone()) {
            continue;
        }
        let pdu = Pdu::from_json(&ev.event_id, &ev.json)?;
        for p in &pdu.data.prev_events {
            if let Some(prev) = ev_store::get_event(txn, p.as_str())?
                && prev.stream.is_none()
                && !prev.rejected
                && prev.state_after.is_some()
            {
                todo.push(prev);
            }
        }
        chain.push((ev, pdu));
    }
    // Oldest first, so stream order follows the graph.
    chain.sort_by_key(|(_, pdu)| u64::from(pdu.data.depth));
    for (ev, pdu) in chain {
        let (relates_to, rel_type) = super::graph::relation_of(&pdu);
        let stream = txn.next_pos();
        ev_store::promote_outlier(
            txn,
            &ev.event_id,
            &ev.event_type,
            stream,
            relates_to.as_deref(),
            rel_type.as_deref(),
        )?;
        if ev.event_type == "m.room.redaction"
            && let Some(target) = &pdu.redacts
        {
            super::apply_redaction_with_rules(txn, rules, target.as_str(), &ev.event_id)?;
        }
        tracing::debug!(event = %ev.event_id, "outlier joins the timeline");
    }
    Ok(())
}

/// Recomputes a room's current state from its forward extremities.
pub fn update_current_state(
    conn: &Connection,
    room_id: &str,
    rules: &RoomVersionRules,
    stream: i64,
) -> Result<()> {
    let mut states = Vec::new();
    let mut groups = Vec::new();
    // Extremities after the same state (messages on forks of one point) count once: the same
    // state twice changes nothing in the resolution, and taking it once per extremity made
    // each event of a room with many such forks resolve them all and store a copy of the
    // state.
    let mut seen = HashSet::new();
    // At most MAX_RESOLVED_STATES states, those of the deepest forks: a member can fork a room
    // a thousand ways with state events of their own, and every later event would resolve
    // them all. The choice depends only on the events, so nodes holding the same events still
    // agree; forks left out count again once an event cites them.
    for state_after in ev_store::extremity_states(conn, room_id)? {
        if states.len() >= MAX_RESOLVED_STATES {
            tracing::debug!(room = %room_id, "more forks than are resolved; the deepest count");
            break;
        }
        if seen.insert(state_after) {
            groups.push(state_after);
            states.push(state_of_group(conn, state_after)?);
        }
    }
    if states.is_empty() {
        return Ok(());
    }
    let (new_state, group) = if states.len() == 1 {
        (states.remove(0), groups[0])
    } else {
        let resolved = resolve_states(conn, rules, &states)?;
        let g = state_store::create_state_group(conn, room_id, None, &resolved)?;
        (resolved, Some(g))
    };
    let old = state_store::current_state(conn, room_id)?;
    for ((ty, key), id) in &new_state {
        if old.get(&(ty.clone(), key.clone())) == Some(id) {
            continue;
        }
        state_store::set_current_state(conn, room_id, ty, key, id)?;
        if ty == "m.room.member"
            && let Some(json) = ev_store::get_event_json(conn, id)?
        {
            let v: Value = serde_json::from_str(&json)?;
            let membership = v
                .pointer("/content/membership")
                .and_then(Value::as_str)
                .unwrap_or("leave");
            ev_store::set_membership(conn, room_id, key, membership, id, stream)?;
        }
    }
    if let Some(g) = group {
        ev_store::set_room_state_group(conn, room_id, g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{self, open_temp};

    /// Stores a bare member event citing `auth` (enough for the graph walks).
    fn store(conn: &Connection, id: &str, auth: &[String], depth: i64) {
        let content = serde_json::json!({ "membership": "join" });
        test_support::store_event(conn, id, "@a:x", "@a:x", content, auth, depth);
    }

    /// A peer picks how deep an auth chain is: the conflicted subgraph of a chain far deeper
    /// than a small thread stack allows for recursion is still found, whole, and nothing off
    /// the paths between the conflicted events is in it.
    #[test]
    fn the_conflicted_subgraph_of_a_very_deep_auth_chain_needs_no_deep_stack() {
        const DEPTH: usize = 30_000;
        let temp = open_temp();
        temp.1
            .write_blocking(|txn| {
                let mut prev: Vec<String> = Vec::new();
                for i in 0..DEPTH {
                    let id = format!("$e{i}");
                    store(txn, &id, &prev, i as i64);
                    prev = vec![id];
                }
                // A side branch off the chain, not between two conflicted events.
                store(txn, "$side", &["$e10".to_owned()], 11);
                Ok(())
            })
            .expect("store");
        let db = temp.1.clone();
        let found = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                db.read_blocking(|conn| {
                    let conflicted = HashSet::from(["$e0".to_owned(), format!("$e{}", DEPTH - 1)]);
                    conflicted_subgraph(conn, conflicted)
                })
            })
            .expect("thread")
            .join()
            .expect("the walk overflowed its stack or panicked")
            .expect("walk");
        assert_eq!(found.len(), DEPTH);
        assert!(found.contains(EventId::parse("$e15000").unwrap().as_ref()));
        assert!(!found.contains(EventId::parse("$side").unwrap().as_ref()));
    }
}
