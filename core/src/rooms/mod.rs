//! Rooms: the event graph, room creation, membership, and reading events back.
//!
//! Every room, even one that never leaves the device, is a Matrix event DAG of signed PDUs,
//! checked with `ruma::state_res`; federation reuses these code paths.

pub mod create;
pub mod directory;
pub mod format;
pub mod graph;
pub mod membership;
pub mod pdu;
pub mod relations;
pub mod remote;
pub mod reports;
pub mod search;
pub mod spaces;
pub mod timeline;
pub mod upgrade;

use std::sync::Arc;

use ruma::{OwnedEventId, UserId};
use serde_json::{Value, json};

use crate::{
    error::{MatrixError, Result},
    identity::Identity,
    notifier::Notifier,
    storage::{Db, events as ev_store, state as state_store},
};
pub use graph::{Appended, EventTemplate, TxnId};

/// The room service.
#[derive(Clone)]
pub struct Rooms {
    pub(crate) db: Db,
    pub(crate) identity: Arc<Identity>,
    pub(crate) notifier: Arc<Notifier>,
}

impl Rooms {
    /// Creates the service.
    pub fn new(db: Db, identity: Arc<Identity>, notifier: Arc<Notifier>) -> Self {
        Self {
            db,
            identity,
            notifier,
        }
    }

    /// Appends an event from a local user, idempotently per device when a transaction id is
    /// given. Returns the event id.
    pub async fn send(
        &self,
        sender: &UserId,
        room_id: &str,
        tpl: EventTemplate,
        txn_id: Option<TxnId>,
    ) -> Result<OwnedEventId> {
        let identity = self.identity.clone();
        let sender = sender.to_owned();
        let room_id = room_id.to_owned();
        let appended = self
            .db
            .write(move |txn| {
                if let Some(t) = &txn_id
                    && let Some(existing) = ev_store::event_for_txn(
                        txn,
                        sender.as_str(),
                        &t.device_id,
                        &t.txn_id,
                        &room_id,
                        &tpl.event_type,
                    )?
                {
                    let id = ruma::EventId::parse(existing)
                        .map_err(|e| crate::error::Error::Event(e.to_string()))?;
                    return Ok((id, false));
                }
                let mut ctx = graph::RoomCtx::load(txn, &room_id)?;
                if let Some(current) = unchanged_state(txn, &ctx, &sender, &tpl)? {
                    return Ok((current, false));
                }
                if tpl.event_type == "m.room.redaction" {
                    check_redaction_allowed(txn, &ctx, &sender, &tpl)?;
                }
                relations::check_new_relation(txn, &room_id, sender.as_str(), &tpl)?;
                let appended =
                    graph::append(txn, &mut ctx, &identity, &sender, &tpl, txn_id.as_ref())?;
                if tpl.event_type == "m.room.redaction"
                    && let Some(target) = &tpl.redacts
                {
                    apply_redaction(txn, &ctx, target, appended.event_id.as_str())?;
                }
                Ok((appended.event_id, true))
            })
            .await?;
        if appended.1 {
            self.notifier.notify();
        }
        Ok(appended.0)
    }

    /// The current state event content of `(ty, key)` in a room, if any.
    pub async fn state_content(&self, room_id: &str, ty: &str, key: &str) -> Result<Option<Value>> {
        let (room_id, ty, key) = (room_id.to_owned(), ty.to_owned(), key.to_owned());
        self.db
            .read(move |conn| {
                let Some(id) = state_store::current_state_event(conn, &room_id, &ty, &key)? else {
                    return Ok(None);
                };
                let Some(json) = ev_store::get_event_json(conn, &id)? else {
                    return Ok(None);
                };
                let v: Value = serde_json::from_str(&json)?;
                Ok(v.get("content").cloned())
            })
            .await
    }

    /// A user's membership in a room (`join`, `invite`, `leave`, `ban`, `knock`), if any.
    pub async fn membership_of(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
        self.db
            .read(move |conn| {
                Ok(ev_store::membership(conn, &room_id, &user_id)?.map(|m| m.membership))
            })
            .await
    }

    /// Fails with `403 M_FORBIDDEN` unless the user is joined to the room.
    pub async fn require_joined(&self, room_id: &str, user_id: &str) -> Result<()> {
        match self.membership_of(room_id, user_id).await?.as_deref() {
            Some("join") => Ok(()),
            _ => Err(MatrixError::forbidden("You are not joined to this room").into()),
        }
    }
}

/// Setting state to exactly what it already is (same sender, same content) sends nothing:
/// the current event's id is the answer, so repeating a state request is idempotent.
fn unchanged_state(
    conn: &rusqlite::Connection,
    ctx: &graph::RoomCtx,
    sender: &UserId,
    tpl: &EventTemplate,
) -> Result<Option<OwnedEventId>> {
    let Some(key) = &tpl.state_key else {
        return Ok(None);
    };
    let Some(id) = ctx.state_event(&tpl.event_type, key) else {
        return Ok(None);
    };
    let Some(json) = ev_store::get_event_json(conn, id)? else {
        return Ok(None);
    };
    let current: Value = serde_json::from_str(&json)?;
    if current.get("sender").and_then(Value::as_str) != Some(sender.as_str())
        || current.get("content") != Some(&tpl.content)
    {
        return Ok(None);
    }
    ruma::EventId::parse(id.as_str())
        .map(Some)
        .map_err(|e| crate::error::Error::Event(e.to_string()))
}

/// A redaction by someone other than the original sender needs the redact power level.
fn check_redaction_allowed(
    conn: &rusqlite::Connection,
    ctx: &graph::RoomCtx,
    sender: &UserId,
    tpl: &EventTemplate,
) -> Result<()> {
    let Some(target) = &tpl.redacts else {
        return Err(MatrixError::missing_param("redacts is required").into());
    };
    let Some(ev) = ev_store::get_event(conn, target)? else {
        return Err(MatrixError::not_found("Event to redact not found").into());
    };
    if Some(ev.room_id.as_str()) != ctx.room_id.as_deref() {
        return Err(MatrixError::not_found("Event to redact not found").into());
    }
    if ev.sender == sender.as_str() {
        return Ok(());
    }
    let levels = membership::power_levels(conn, ctx)?;
    if levels.user_level(sender.as_str()) >= levels.redact {
        Ok(())
    } else {
        Err(MatrixError::forbidden("You may only redact your own events").into())
    }
}

/// Replaces the redacted event's stored JSON with its redacted form.
fn apply_redaction(
    conn: &rusqlite::Connection,
    ctx: &graph::RoomCtx,
    target: &str,
    redaction_id: &str,
) -> Result<()> {
    apply_redaction_with_rules(conn, &ctx.rules, target, redaction_id)
}

/// Replaces the redacted event's stored JSON with its redacted form (under `rules`).
pub(crate) fn apply_redaction_with_rules(
    conn: &rusqlite::Connection,
    rules: &ruma::room_version_rules::RoomVersionRules,
    target: &str,
    redaction_id: &str,
) -> Result<()> {
    let Some(json) = ev_store::get_event_json(conn, target)? else {
        return Ok(());
    };
    let obj: ruma::CanonicalJsonObject = serde_json::from_str(&json)?;
    let redacted = ruma::canonical_json::redact(obj, &rules.redaction, None)
        .map_err(|e| crate::error::Error::Event(e.to_string()))?;
    ev_store::mark_redacted(
        conn,
        target,
        &serde_json::to_string(&redacted)?,
        redaction_id,
    )?;
    Ok(())
}

/// The empty JSON object, for events without content.
pub fn empty() -> Value {
    json!({})
}
