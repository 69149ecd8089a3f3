//! Turning stored PDUs into the client-server API's event format.

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::{
    error::Result,
    storage::{events as ev_store, events::StoredEvent},
};

/// Who is looking at an event: the sender's own device sees its transaction id.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// The user.
    pub user_id: &'a str,
    /// The device, if known.
    pub device_id: Option<&'a str>,
}

/// PDU fields that clients never see.
const SERVER_ONLY: &[&str] = &[
    "auth_events",
    "prev_events",
    "hashes",
    "signatures",
    "depth",
    "origin",
    "unsigned",
];

/// The client format of a stored event.
pub fn client_event(
    conn: &Connection,
    ev: &StoredEvent,
    viewer: Option<Viewer<'_>>,
    now: i64,
) -> Result<Value> {
    let mut obj: Map<String, Value> = serde_json::from_str(&ev.json)?;
    for key in SERVER_ONLY {
        obj.remove(*key);
    }
    obj.insert("event_id".into(), json!(ev.event_id));
    obj.insert("room_id".into(), json!(ev.room_id));
    copy_redacts_to_top_level(&mut obj);
    let mut unsigned = Map::new();
    unsigned.insert("age".into(), json!((now - ev.origin_server_ts).max(0)));
    if let (Some(v), Some(device), Some(txn)) = (viewer, &ev.txn_device, &ev.txn_id)
        && v.user_id == ev.sender
        && v.device_id == Some(device.as_str())
    {
        unsigned.insert("transaction_id".into(), json!(txn));
    }
    if let Some(by) = &ev.redacted_by
        && let Some(redaction) = ev_store::get_event(conn, by)?
    {
        let because = client_event(conn, &redaction, None, now)?;
        unsigned.insert("redacted_because".into(), because);
    }
    if let Some(prev_id) = &ev.prev_state
        && let Some(prev_json) = ev_store::get_event_json(conn, prev_id)?
    {
        let prev: Value = serde_json::from_str(&prev_json)?;
        if let Some(content) = prev.get("content") {
            unsigned.insert("prev_content".into(), content.clone());
            unsigned.insert("replaces_state".into(), json!(prev_id));
            if let Some(sender) = prev.get("sender") {
                unsigned.insert("prev_sender".into(), sender.clone());
            }
        }
    }
    obj.insert("unsigned".into(), Value::Object(unsigned));
    Ok(Value::Object(obj))
}

/// From room version 11, a redaction names the redacted event in `content.redacts` only.
/// Clients written for earlier versions (matrix-nio among them) read the top-level field, so
/// it is served there too, with the same value.
fn copy_redacts_to_top_level(obj: &mut Map<String, Value>) {
    if obj.get("type").and_then(Value::as_str) != Some("m.room.redaction")
        || obj.contains_key("redacts")
    {
        return;
    }
    let redacts = obj
        .get("content")
        .and_then(|c| c.get("redacts"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(redacts) = redacts {
        obj.insert("redacts".into(), Value::String(redacts));
    }
}

/// The stripped form of a state event, as shown in invites.
pub fn stripped_state(ev: &StoredEvent) -> Result<Value> {
    let v: Value = serde_json::from_str(&ev.json)?;
    Ok(json!({
        "type": ev.event_type,
        "state_key": ev.state_key.clone().unwrap_or_default(),
        "sender": ev.sender,
        "content": v.get("content").cloned().unwrap_or_else(|| json!({})),
    }))
}
