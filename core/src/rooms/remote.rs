//! Accepting events made elsewhere into a room's graph: the spec's checks on receipt of a PDU
//! (signatures and hash, auth against the event's auth events, against the state before it,
//! soft-fail against the current state), state resolution v2 across forks, and the new
//! current state.

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

use super::{graph::load_pdu, pdu::Pdu};
use crate::{
    error::{Error, Result},
    federation::auth::public_key_map,
    storage::{
        WriteTxn,
        events::{self as ev_store, NewEvent},
        state::{self as state_store, StateMap},
    },
};

/// What became of a received PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored in the timeline at this stream position.
    Stored(i64),
    /// Already known.
    Known,
    /// Failed the authorization rules; kept only as rejected.
    Rejected(String),
    /// Allowed by its own history but not by the current state: kept out of the timeline.
    SoftFailed(String),
}

/// A PDU's prev events that this node lacks.
#[derive(Debug)]
pub struct MissingPrevs(pub Vec<String>);

/// Checks a PDU's signatures and content hash; returns its event id and the object to use
/// (redacted if the content hash does not match).
pub fn verify_pdu(
    mut obj: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(OwnedEventId, CanonicalJsonObject), String> {
    obj.remove("unsigned");
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(&obj, &rules.signatures)
            .map_err(|e| e.to_string())?;
    let mut keys = ruma::signatures::PublicKeyMap::new();
    for server in servers {
        let map = public_key_map(server.as_str())
            .ok_or_else(|| format!("{server} is not a Neurite server"))?;
        keys.extend(map);
    }
    let verified = verify_event(&keys, &obj, rules).map_err(|e| format!("signature: {e}"))?;
    let hash = reference_hash(&obj, rules).map_err(|e| e.to_string())?;
    let event_id = EventId::parse(format!("${hash}")).map_err(|e| e.to_string())?;
    if verified == Verified::Signatures {
        obj =
            ruma::canonical_json::redact(obj, &rules.redaction, None).map_err(|e| e.to_string())?;
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
    }
}

/// Stores an event outside the timeline (auth chains and state from a join), after checking
/// its signatures. Known events are left alone.
pub fn store_outlier(
    conn: &Connection,
    room_id: &str,
    obj: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<String> {
    let (event_id, obj) = verify_pdu(obj, rules).map_err(Error::Event)?;
    if ev_store::get_event(conn, event_id.as_str())?.is_some() {
        return Ok(event_id.to_string());
    }
    let pdu = Pdu::from_object(event_id.clone(), &obj)?;
    let json = serde_json::to_string(&obj)?;
    let (ty, _) = kind_and_key(&obj);
    let prevs: Vec<String> = pdu.data.prev_events.iter().map(|e| e.to_string()).collect();
    ev_store::insert_event(conn, &new_event(&pdu, room_id, &json, &ty, &prevs))?;
    conn.execute(
        "UPDATE events SET outlier = 1 WHERE event_id = ?1",
        [event_id.as_str()],
    )?;
    Ok(event_id.to_string())
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

/// Every event reachable from `start` through auth events (including `start`).
fn auth_chain(
    conn: &Connection,
    start: impl IntoIterator<Item = String>,
) -> Result<HashSet<String>> {
    let mut seen = HashSet::new();
    let mut todo: Vec<String> = start.into_iter().collect();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(pdu) = load_pdu(conn, &id)? {
            todo.extend(pdu.data.auth_events.iter().map(|e| e.to_string()));
        }
    }
    Ok(seen)
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
        let chain = auth_chain(conn, s.values().cloned())?;
        chains.push(
            chain
                .iter()
                .filter_map(|id| EventId::parse(id).ok())
                .collect::<EventIdSet<OwnedEventId>>(),
        );
    }
    let cache = std::cell::RefCell::new(HashMap::<OwnedEventId, Option<Pdu>>::new());
    let fetch = |id: &EventId| -> Option<Pdu> {
        if let Some(hit) = cache.borrow().get(id) {
            return hit.clone();
        }
        let loaded = load_pdu(conn, id.as_str()).ok().flatten();
        cache.borrow_mut().insert(id.to_owned(), loaded.clone());
        loaded
    };
    let subgraph =
        |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| -> Option<EventIdSet<OwnedEventId>> {
            conflicted_subgraph(
                conn,
                conflicted
                    .values()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect(),
            )
            .ok()
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
    )
    .map_err(|e| Error::Event(format!("state resolution: {e}")))?;
    Ok(from_res_map(resolved))
}

/// Events on auth-event paths between two conflicted events (room version 12's
/// "conflicted state subgraph").
fn conflicted_subgraph(
    conn: &Connection,
    conflicted: HashSet<String>,
) -> Result<EventIdSet<OwnedEventId>> {
    // reaches[x] = whether some conflicted event is among x's auth ancestors (or x itself).
    let mut reaches: HashMap<String, bool> = HashMap::new();
    fn visit(
        conn: &Connection,
        id: &str,
        conflicted: &HashSet<String>,
        reaches: &mut HashMap<String, bool>,
        depth: usize,
    ) -> Result<bool> {
        if let Some(r) = reaches.get(id) {
            return Ok(*r);
        }
        let mut r = conflicted.contains(id);
        if depth < 10_000
            && let Some(pdu) = load_pdu(conn, id)?
        {
            for a in &pdu.data.auth_events {
                r |= visit(conn, a.as_str(), conflicted, reaches, depth + 1)?;
            }
        }
        reaches.insert(id.to_owned(), r);
        Ok(r)
    }
    let mut out = EventIdSet::new();
    for c in &conflicted {
        // Walk down from each conflicted event; keep ancestors from which another conflicted
        // event is reachable.
        let mut todo = vec![c.clone()];
        let mut seen = HashSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if visit(conn, &id, &conflicted, &mut reaches, 0)? {
                if let Ok(eid) = EventId::parse(&id) {
                    out.insert(eid);
                }
                if let Some(pdu) = load_pdu(conn, &id)? {
                    todo.extend(pdu.data.auth_events.iter().map(|e| e.to_string()));
                }
            }
        }
    }
    Ok(out)
}

fn state_of_group(conn: &Connection, group: Option<i64>) -> Result<StateMap> {
    match group {
        Some(g) => state_store::load_state_group(conn, g),
        None => Ok(StateMap::new()),
    }
}

/// Checks a verified PDU and adds it to the room's timeline.
///
/// Fails with [`MissingPrevs`] (inside `Ok(Err(..))`) if prev events are unknown, so the caller
/// can fetch them first.
pub fn accept_pdu(
    txn: &mut WriteTxn<'_>,
    room_id: &str,
    event_id: OwnedEventId,
    obj: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<std::result::Result<Accepted, MissingPrevs>> {
    if let Some(known) = ev_store::get_event(txn, event_id.as_str())? {
        if known.stream.is_some() || known.rejected {
            return Ok(Ok(Accepted::Known));
        }
        // An outlier joins the timeline now: store it afresh.
        txn.execute(
            "DELETE FROM events WHERE event_id = ?1",
            [event_id.as_str()],
        )?;
    }
    let pdu = Pdu::from_object(event_id.clone(), obj)?;
    if pdu
        .data
        .room_id
        .as_ref()
        .is_some_and(|r| r.as_str() != room_id)
    {
        return Ok(Ok(Accepted::Rejected("event is for another room".into())));
    }
    let json = serde_json::to_string(obj)?;
    let (ty, state_key) = kind_and_key(obj);
    let prevs: Vec<String> = pdu.data.prev_events.iter().map(|e| e.to_string()).collect();

    let reject = |txn: &mut WriteTxn<'_>, why: String| -> Result<Accepted> {
        ev_store::insert_event(txn, &new_event(&pdu, room_id, &json, &ty, &prevs))?;
        txn.execute(
            "UPDATE events SET rejected = 1 WHERE event_id = ?1",
            [event_id.as_str()],
        )?;
        tracing::info!(event = %event_id, reason = %why, "rejected incoming event");
        Ok(Accepted::Rejected(why))
    };

    // Auth against the event's own auth events.
    let fetch_event = |id: &EventId| load_pdu(txn, id.as_str()).ok().flatten();
    if let Err(e) =
        state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, fetch_event)
    {
        return reject(txn, e).map(Ok);
    }

    // The state before the event: its prev events' states, resolved.
    let mut missing = Vec::new();
    let mut prev_states = Vec::new();
    let mut prev_groups = Vec::new();
    for p in &prevs {
        match ev_store::get_event(txn, p)? {
            Some(ev) if ev.stream.is_some() && !ev.rejected => {
                prev_groups.push(ev.state_after);
                prev_states.push(state_of_group(txn, ev.state_after)?);
            }
            _ => missing.push(p.clone()),
        }
    }
    if !missing.is_empty() {
        return Ok(Err(MissingPrevs(missing)));
    }
    let (state_before, before_group) = if prev_states.len() == 1 {
        (prev_states.remove(0), prev_groups[0])
    } else {
        let resolved = resolve_states(txn, rules, &prev_states)?;
        let group = state_store::create_state_group(txn, room_id, None, &resolved)?;
        (resolved, Some(group))
    };
    let fetch_state = |t: &StateEventType, k: &str| {
        state_before
            .get(&(t.to_string(), k.to_owned()))
            .and_then(|id| load_pdu(txn, id).ok().flatten())
    };
    if let Err(e) =
        state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, fetch_state)
    {
        return reject(txn, e).map(Ok);
    }

    // Soft-fail: allowed by its history, but not by the room as it is now.
    let current = state_store::current_state(txn, room_id)?;
    let fetch_current = |t: &StateEventType, k: &str| {
        current
            .get(&(t.to_string(), k.to_owned()))
            .and_then(|id| load_pdu(txn, id).ok().flatten())
    };
    if let Err(e) =
        state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, fetch_current)
    {
        ev_store::insert_event(txn, &new_event(&pdu, room_id, &json, &ty, &prevs))?;
        txn.execute(
            "UPDATE events SET outlier = 1 WHERE event_id = ?1",
            [event_id.as_str()],
        )?;
        tracing::info!(event = %event_id, reason = %e, "soft-failed incoming event");
        return Ok(Ok(Accepted::SoftFailed(e)));
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
    let stream = txn.next_pos();
    let (relates_to, rel_type) = super::graph::relation_of(&pdu);
    let mut row = new_event(&pdu, room_id, &json, &ty, &prevs);
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
    Ok(Ok(Accepted::Stored(stream)))
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
    for id in ev_store::forward_extremities(conn, room_id)? {
        if let Some(ev) = ev_store::get_event(conn, &id)? {
            groups.push(ev.state_after);
            states.push(state_of_group(conn, ev.state_after)?);
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
