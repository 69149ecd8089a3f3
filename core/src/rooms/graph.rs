//! Appending events to a room's graph: choose prev and auth events, hash, sign, check the
//! authorization rules, and store the event with the state after it.
//!
//! Everything here runs inside one write transaction, so a batch of events (a new room's
//! initial state) is stored all together or not at all.
//!
//! About 550 lines of code, then its tests.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    signatures::{hash_and_sign_event, reference_hash},
    state_res,
};
use rusqlite::Connection;
use serde_json::Value;

use super::pdu::Pdu;
use crate::{
    error::{Error, ErrorCode, MatrixError, Result},
    identity::Identity,
    storage::{
        WriteTxn,
        events::{self as ev_store, NewEvent},
        state::{self as state_store, StateMap},
    },
};

/// What a local user wants to add to a room.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    /// Event type.
    pub event_type: String,
    /// State key for state events.
    pub state_key: Option<String>,
    /// Content.
    pub content: Value,
    /// For redactions: the event redacted.
    pub redacts: Option<String>,
}

impl EventTemplate {
    /// A state event.
    pub fn state(event_type: &str, state_key: &str, content: Value) -> Self {
        Self {
            event_type: event_type.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
        }
    }

    /// A message-like event.
    pub fn message(event_type: &str, content: Value) -> Self {
        Self {
            event_type: event_type.to_owned(),
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// A client's transaction id, scoped to its device.
#[derive(Debug, Clone)]
pub struct TxnId {
    /// Device that sent the request.
    pub device_id: String,
    /// The client's transaction id.
    pub txn_id: String,
}

/// The room as seen by the next event to append.
#[derive(Debug, Clone)]
pub struct RoomCtx {
    /// Room id (None while building a v12 create event).
    pub room_id: Option<String>,
    /// Room version.
    pub version: RoomVersionId,
    /// Rules of that version.
    pub rules: RoomVersionRules,
    /// Current state.
    pub state: StateMap,
    /// Current state group.
    pub state_group: Option<i64>,
    /// Forward extremities.
    pub prevs: Vec<String>,
    /// Depth of the next event.
    pub depth: i64,
}

/// The most prev events an event of this node points to: as many as other servers take
/// ([`super::remote::MAX_PREV_EVENTS`]), so that an event builds on every fork there is (its
/// state is checked against the room's current state here, and against the state its prev
/// events resolve to everywhere else) unless the room has more forks than that.
const MAX_PREV_EVENTS: usize = super::remote::MAX_PREV_EVENTS;

/// Room versions this node creates and joins.
pub const SUPPORTED_VERSIONS: &[&str] = &["6", "7", "8", "9", "10", "11", "12"];
/// Room version used when a client does not ask for one.
pub const DEFAULT_VERSION: RoomVersionId = RoomVersionId::V12;

/// Rules of a supported room version, or `400 M_UNSUPPORTED_ROOM_VERSION`.
pub fn version_rules(version: &str) -> Result<(RoomVersionId, RoomVersionRules), MatrixError> {
    let unsupported = || {
        MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedRoomVersion,
            format!("Room version {version} is not supported"),
        )
    };
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(unsupported());
    }
    let id = RoomVersionId::try_from(version).map_err(|_| unsupported())?;
    let rules = id.rules().ok_or_else(unsupported)?;
    Ok((id, rules))
}

impl RoomCtx {
    /// Context for a brand-new room.
    pub fn new_room(
        version: RoomVersionId,
        rules: RoomVersionRules,
        room_id: Option<String>,
    ) -> Self {
        Self {
            room_id,
            version,
            rules,
            state: StateMap::new(),
            state_group: None,
            prevs: vec![],
            depth: 1,
        }
    }

    /// Loads the context of an existing room; `404 M_NOT_FOUND` if unknown.
    pub fn load(conn: &Connection, room_id: &str) -> Result<Self> {
        let room = ev_store::get_room(conn, room_id)?
            .ok_or_else(|| MatrixError::not_found("Unknown room"))?;
        let (version, rules) = version_rules(&room.room_version)?;
        let state = state_store::current_state(conn, room_id)?;
        let cited = ev_store::extremities_to_cite(conn, room_id, MAX_PREV_EVENTS)?;
        let depth = cited.iter().map(|(_, d)| *d).max().unwrap_or(0);
        let prevs: Vec<String> = cited.into_iter().map(|(id, _)| id).collect();
        Ok(Self {
            room_id: Some(room_id.to_owned()),
            version,
            rules,
            state,
            state_group: room.state_group,
            prevs,
            depth: depth + 1,
        })
    }

    /// The event id of one current state entry.
    pub fn state_event(&self, ty: &str, key: &str) -> Option<&String> {
        self.state.get(&(ty.to_owned(), key.to_owned()))
    }
}

/// Builds, hashes and signs an event from a template.
pub fn build_event(
    ctx: &RoomCtx,
    identity: &Identity,
    sender: &UserId,
    tpl: &EventTemplate,
    origin_server_ts: i64,
) -> Result<(Pdu, CanonicalJsonObject)> {
    let obj = event_template(ctx, identity, sender, tpl, origin_server_ts)?;
    sign_event(obj, identity, &ctx.rules)
}

/// The unsigned PDU for a template: prev and auth events chosen from `ctx`.
pub fn event_template(
    ctx: &RoomCtx,
    identity: &Identity,
    sender: &UserId,
    tpl: &EventTemplate,
    origin_server_ts: i64,
) -> Result<CanonicalJsonObject> {
    let kind = TimelineEventType::from(tpl.event_type.as_str());
    let mut content = tpl.content.clone();
    if tpl.event_type == "m.room.redaction"
        && ctx.rules.redaction.content_field_redacts
        && let (Some(obj), Some(r)) = (content.as_object_mut(), &tpl.redacts)
    {
        obj.insert("redacts".into(), Value::String(r.clone()));
    }
    let content_raw = serde_json::value::to_raw_value(&content)?;
    let auth_types = state_res::auth_types_for_event(
        &kind,
        sender,
        tpl.state_key.as_deref(),
        &content_raw,
        &ctx.rules.authorization,
    )
    .map_err(MatrixError::bad_json)?;
    let mut auth_events: Vec<String> = auth_types
        .iter()
        .filter_map(|(ty, key)| ctx.state_event(&ty.to_string(), key).cloned())
        .collect();
    auth_events.sort();
    auth_events.dedup();

    let canonical = |v: Value| {
        CanonicalJsonValue::try_from(v).map_err(|e| {
            Error::from(MatrixError::bad_json(format!(
                "content is not canonical JSON: {e}"
            )))
        })
    };
    let strings = |v: &[String]| {
        CanonicalJsonValue::Array(v.iter().cloned().map(CanonicalJsonValue::String).collect())
    };

    let mut obj = CanonicalJsonObject::new();
    obj.insert(
        "type".into(),
        CanonicalJsonValue::String(tpl.event_type.clone()),
    );
    obj.insert(
        "sender".into(),
        CanonicalJsonValue::String(sender.to_string()),
    );
    obj.insert("content".into(), canonical(content)?);
    obj.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(
            origin_server_ts
                .try_into()
                .map_err(|_| Error::Event("timestamp".into()))?,
        ),
    );
    obj.insert(
        "depth".into(),
        CanonicalJsonValue::Integer(
            ctx.depth
                .try_into()
                .map_err(|_| Error::Event("depth".into()))?,
        ),
    );
    obj.insert("prev_events".into(), strings(&ctx.prevs));
    obj.insert("auth_events".into(), strings(&auth_events));
    if let Some(room_id) = &ctx.room_id {
        obj.insert(
            "room_id".into(),
            CanonicalJsonValue::String(room_id.clone()),
        );
    }
    if let Some(key) = &tpl.state_key {
        obj.insert("state_key".into(), CanonicalJsonValue::String(key.clone()));
    }
    if let Some(r) = &tpl.redacts
        && !ctx.rules.redaction.content_field_redacts
    {
        obj.insert("redacts".into(), CanonicalJsonValue::String(r.clone()));
    }
    if !ctx.rules.authorization.use_room_create_sender {
        obj.insert(
            "origin".into(),
            CanonicalJsonValue::String(identity.server_name().to_string()),
        );
    }
    Ok(obj)
}

/// Adds the content hash and this node's signature; computes the event id.
pub fn sign_event(
    mut obj: CanonicalJsonObject,
    identity: &Identity,
    rules: &RoomVersionRules,
) -> Result<(Pdu, CanonicalJsonObject)> {
    obj.remove("hashes");
    obj.remove("signatures");
    obj.remove("unsigned");
    hash_and_sign_event(
        identity.server_name().as_str(),
        identity.key_pair(),
        &mut obj,
        &rules.redaction,
    )
    .map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => Error::from(MatrixError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            "Event is larger than 65536 bytes",
        )),
        other => Error::Event(other.to_string()),
    })?;
    let hash = reference_hash(&obj, rules).map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => Error::from(MatrixError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            "Event is larger than 65536 bytes",
        )),
        other => Error::Event(other.to_string()),
    })?;
    let event_id = EventId::parse(format!("${hash}")).map_err(|e| Error::Event(e.to_string()))?;
    let pdu = Pdu::from_object(event_id, &obj)?;
    Ok((pdu, obj))
}

/// Loads an event of the graph as a [`Pdu`].
pub fn load_pdu(conn: &Connection, event_id: &str) -> Result<Option<Pdu>> {
    let Some(ev) = ev_store::get_event(conn, event_id)? else {
        return Ok(None);
    };
    let mut pdu = Pdu::from_json(&ev.event_id, &ev.json)?;
    pdu.rejected = ev.rejected;
    Ok(Some(pdu))
}

/// Reads for the callbacks of the authorization rules and of state resolution, which can
/// only answer "absent". A failed read is logged and kept, and [`Fetches::finish`] returns it
/// afterwards, so that no decision is taken as if an event the database failed to read were
/// missing.
#[derive(Default)]
pub(crate) struct Fetches(std::cell::RefCell<Option<Error>>);

impl Fetches {
    /// The stored event, or `None` if it is absent or could not be read.
    pub(crate) fn pdu(&self, conn: &Connection, event_id: &str) -> Option<Pdu> {
        self.keep(load_pdu(conn, event_id)).flatten()
    }

    /// The value, or `None` after keeping the failure.
    pub(crate) fn keep<T>(&self, result: Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(error = %e, "reading the room graph for an auth decision failed");
                self.0.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    /// The first failure kept, if any.
    pub(crate) fn finish(self) -> Result<()> {
        match self.0.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The auth chain of `start`: the events they cite as auth events, transitively, in the order
/// found. The starting events are not included (unless one cites another); events this node
/// does not have are skipped.
pub fn auth_chain(
    conn: &Connection,
    start: impl IntoIterator<Item = String>,
) -> Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut todo = Vec::new();
    for id in start {
        if let Some(pdu) = load_pdu(conn, &id)? {
            todo.extend(pdu.data.auth_events.iter().map(|e| e.to_string()));
        }
    }
    let mut out = Vec::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(pdu) = load_pdu(conn, &id)? {
            todo.extend(pdu.data.auth_events.iter().map(|e| e.to_string()));
            out.push(id);
        }
    }
    Ok(out)
}

/// Checks an event against the authorization rules and the room's current state.
/// A failure is the client's `403 M_FORBIDDEN`; a failed read of the database is an internal
/// error, not a refusal.
pub fn check_auth(conn: &Connection, ctx: &RoomCtx, pdu: &Pdu) -> Result<()> {
    let fetches = Fetches::default();
    let fetch_event = |id: &EventId| fetches.pdu(conn, id.as_str());
    let independent =
        state_res::check_state_independent_auth_rules(&ctx.rules.authorization, pdu, fetch_event);
    let fetch_state = |ty: &StateEventType, key: &str| {
        ctx.state_event(&ty.to_string(), key)
            .and_then(|id| fetches.pdu(conn, id))
    };
    let dependent = independent.and_then(|()| {
        state_res::check_state_dependent_auth_rules(&ctx.rules.authorization, pdu, fetch_state)
    });
    fetches.finish()?;
    dependent.map_err(|e| MatrixError::forbidden(format!("Event not allowed: {e}")))?;
    Ok(())
}

/// The result of appending an event.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The new event's id.
    pub event_id: OwnedEventId,
    /// Its stream position.
    pub stream: i64,
}

/// Stores an authorised event as the room's new head and advances `ctx` past it.
pub fn persist_event(
    txn: &mut WriteTxn<'_>,
    ctx: &mut RoomCtx,
    pdu: &Pdu,
    obj: &CanonicalJsonObject,
    txn_id: Option<&TxnId>,
) -> Result<Appended> {
    let room_id = ctx
        .room_id
        .clone()
        .ok_or_else(|| Error::Event("persisting an event with no room id".into()))?;
    let stream = txn.next_pos();
    let event_id = pdu.event_id.as_str();
    let json = serde_json::to_string(obj)?;
    let state_before = ctx.state_group;
    let mut state_after = state_before;
    let mut prev_state = None;
    if let Some(key) = &pdu.data.state_key {
        let ty = pdu.data.kind.to_string();
        let changes: StateMap = BTreeMap::from([((ty.clone(), key.clone()), event_id.to_owned())]);
        prev_state = ctx.state.get(&(ty.clone(), key.clone())).cloned();
        let group = state_store::create_state_group(txn, &room_id, state_before, &changes)?;
        state_store::set_current_state(txn, &room_id, &ty, key, event_id)?;
        ev_store::set_room_state_group(txn, &room_id, group)?;
        ctx.state.insert((ty, key.clone()), event_id.to_owned());
        ctx.state_group = Some(group);
        state_after = Some(group);
        if pdu.data.kind == TimelineEventType::RoomMember {
            let membership = serde_json::from_str::<Value>(pdu.data.content.get())?
                .get("membership")
                .and_then(Value::as_str)
                .unwrap_or("leave")
                .to_owned();
            ev_store::set_membership(txn, &room_id, key, &membership, event_id, stream)?;
        }
    }
    let (relates_to, rel_type) = relation_of(pdu);
    let prevs: Vec<String> = pdu.data.prev_events.iter().map(|e| e.to_string()).collect();
    ev_store::insert_event(
        txn,
        &NewEvent {
            event_id,
            room_id: &room_id,
            stream: Some(stream),
            event_type: &pdu.data.kind.to_string(),
            state_key: pdu.data.state_key.as_deref(),
            sender: pdu.data.sender.as_str(),
            origin_server_ts: i64::from(pdu.data.origin_server_ts.get()),
            depth: ctx.depth,
            json: &json,
            state_before,
            state_after,
            prev_state: prev_state.as_deref(),
            relates_to: relates_to.as_deref(),
            rel_type: rel_type.as_deref(),
            txn_device: txn_id.map(|t| t.device_id.as_str()),
            txn_id: txn_id.map(|t| t.txn_id.as_str()),
            prev_events: &prevs,
            outlier: false,
            rejected: false,
        },
    )?;
    ev_store::advance_extremities(txn, &room_id, event_id, &prevs)?;
    crate::push::record_event(
        txn,
        &room_id,
        &ctx.rules,
        stream,
        &json,
        pdu.data.sender.as_str(),
        crate::push::thread_root(relates_to.as_deref(), rel_type.as_deref()),
    )?;
    ctx.prevs = vec![event_id.to_owned()];
    ctx.depth += 1;
    Ok(Appended {
        event_id: pdu.event_id.clone(),
        stream,
    })
}

pub(crate) fn relation_of(pdu: &Pdu) -> (Option<String>, Option<String>) {
    let Ok(content) = serde_json::from_str::<Value>(pdu.data.content.get()) else {
        return (None, None);
    };
    let Some(rel) = content.get("m.relates_to") else {
        return (None, None);
    };
    if let Some(target) = rel.get("event_id").and_then(Value::as_str) {
        let ty = rel
            .get("rel_type")
            .and_then(Value::as_str)
            .map(str::to_owned);
        return (Some(target.to_owned()), ty);
    }
    (None, None)
}

/// The server of the invitee, if `tpl` invites a user of a server other than `local`.
fn remote_invitee_server<'a>(tpl: &'a EventTemplate, local: &str) -> Option<&'a str> {
    let invitee = tpl.state_key.as_deref()?;
    let is_invite = tpl.event_type == "m.room.member"
        && tpl.content.get("membership").and_then(Value::as_str) == Some("invite");
    let server = invitee.split_once(':').map(|(_, s)| s)?;
    (is_invite && server != local).then_some(server)
}

/// Builds, checks and stores one event in one step.
pub fn append(
    txn: &mut WriteTxn<'_>,
    ctx: &mut RoomCtx,
    identity: &Identity,
    sender: &UserId,
    tpl: &EventTemplate,
    txn_id: Option<&TxnId>,
) -> Result<Appended> {
    let (pdu, obj) = build_event(ctx, identity, sender, tpl, crate::storage::now_ms())?;
    check_auth(txn, ctx, &pdu)?;
    let appended = persist_event(txn, ctx, &pdu, &obj, txn_id)?;
    // Every other server in the room gets the event through its outbox queue.
    if let Some(room_id) = &ctx.room_id {
        let local = identity.server_name().as_str();
        let now = crate::storage::now_ms();
        crate::storage::federation::enqueue_for_room(
            txn,
            room_id,
            appended.event_id.as_str(),
            local,
            None,
            now,
        )?;
        // The invitee's server is told of an invite of one of its users (it need not be in
        // the room, and may be off): the invite waits in the queue until it is reached.
        if let Some(server) = remote_invitee_server(tpl, local) {
            crate::storage::federation::enqueue_invite(
                txn,
                server,
                room_id,
                appended.event_id.as_str(),
                now,
            )?;
        }
    }
    Ok(appended)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::storage::test_support::{self, open_temp};

    /// A message whose only auth event is `$create`, checked in room version 11 against a
    /// state whose create event is `$create`.
    fn check_message(conn: &Connection) -> Result<()> {
        let json = json!({
            "room_id": "!r:x", "sender": "@a:x", "origin_server_ts": 0,
            "type": "m.room.message", "content": { "body": "hi" },
            "auth_events": ["$create"], "prev_events": [], "depth": 1,
        });
        let pdu = Pdu::from_json("$msg", &json.to_string())?;
        let (version, rules) = version_rules("11")?;
        let ctx = RoomCtx {
            room_id: Some("!r:x".into()),
            version,
            rules,
            state: StateMap::from([(("m.room.create".into(), String::new()), "$create".into())]),
            state_group: None,
            prevs: Vec::new(),
            depth: 1,
        };
        check_auth(conn, &ctx, &pdu)
    }

    /// An auth event that is not there refuses the event; one the database fails to read
    /// back is an internal fault, not a refusal as if it were missing.
    #[test]
    fn an_unreadable_auth_event_is_a_fault_not_a_missing_event() {
        let temp = open_temp();
        let absent = temp.1.read_blocking(|conn| Ok(check_message(conn)));
        match absent.expect("read") {
            Err(Error::Matrix(m)) => assert_eq!(m.errcode, ErrorCode::Forbidden),
            other => panic!("expected a refusal, got {other:?}"),
        }
        temp.1
            .write_blocking(|txn| {
                test_support::store_event(txn, "$create", "@a:x", "", json!({}), &[], 0);
                test_support::damage_event_json(txn, "$create")?;
                Ok(())
            })
            .expect("store");
        let unreadable = temp.1.read_blocking(|conn| Ok(check_message(conn)));
        match unreadable.expect("read") {
            Err(Error::Json(_)) => {}
            other => panic!("expected the storage fault, got {other:?}"),
        }
    }
}
