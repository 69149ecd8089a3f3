//! The request body of simplified sliding sync (MSC4186): its shape, the checks serde
//! cannot make, and what carries over from the connection's previous request.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{MatrixError, Result};

/// A sliding sync request body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Request {
    /// Tells apart several connections of one device.
    #[serde(default)]
    pub conn_id: Option<String>,
    /// Echoed back in the response.
    #[serde(default)]
    pub txn_id: Option<String>,
    /// Room lists, by name.
    #[serde(default)]
    pub lists: BTreeMap<String, ListRequest>,
    /// Rooms the client wants whatever the lists say.
    #[serde(default)]
    pub room_subscriptions: BTreeMap<String, RoomParams>,
    /// Extensions.
    #[serde(default)]
    pub extensions: Extensions,
}

/// What to send of each room.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomParams {
    /// `[type, state_key]` pairs; `*` matches anything, `$ME` is the user, and
    /// `["m.room.member", "$LAZY"]` asks for the members of the timeline's senders.
    #[serde(default)]
    pub required_state: Vec<(String, String)>,
    /// Most timeline events per room.
    #[serde(default)]
    pub timeline_limit: Option<u64>,
}

impl RoomParams {
    /// Combines two sets of parameters for a room that several lists show. Linear in the
    /// number of rules: a request may list many.
    pub fn merge(&mut self, other: &RoomParams) {
        if !other.required_state.is_empty() {
            let mut seen: HashSet<&(String, String)> = self.required_state.iter().collect();
            let new: Vec<(String, String)> = other
                .required_state
                .iter()
                .filter(|rule| seen.insert(rule))
                .cloned()
                .collect();
            self.required_state.extend(new);
        }
        self.timeline_limit = match (self.timeline_limit, other.timeline_limit) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// One list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListRequest {
    /// Inclusive index ranges of the sorted list to send.
    #[serde(default)]
    pub ranges: Vec<(u64, u64)>,
    /// Per-room parameters.
    #[serde(flatten)]
    pub params: RoomParams,
    /// Which rooms the list holds.
    #[serde(default)]
    pub filters: Option<ListFilters>,
}

/// List filters; absent fields do not filter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListFilters {
    /// Direct chats only (`true`) or none (`false`), as `m.direct` account data says.
    #[serde(default)]
    pub is_dm: Option<bool>,
    /// Invites only, or none.
    #[serde(default)]
    pub is_invite: Option<bool>,
    /// Encrypted rooms only, or none.
    #[serde(default)]
    pub is_encrypted: Option<bool>,
    /// Rooms of these creation types (`null` for rooms without one).
    #[serde(default)]
    pub room_types: Option<Vec<Option<String>>>,
    /// Rooms not of these creation types.
    #[serde(default)]
    pub not_room_types: Option<Vec<Option<String>>>,
}

/// An extension that is only switched on or off.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Toggle {
    /// Whether the extension is on.
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl Toggle {
    /// Whether the extension is on.
    pub fn on(&self) -> bool {
        self.enabled == Some(true)
    }
}

/// The to-device extension.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToDeviceRequest {
    /// Whether the extension is on.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The `next_batch` of the last response: messages up to it arrived.
    #[serde(default)]
    pub since: Option<String>,
    /// Most messages per response.
    #[serde(default)]
    pub limit: Option<u64>,
}

/// The extensions a request asks for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Extensions {
    /// To-device messages.
    #[serde(default)]
    pub to_device: ToDeviceRequest,
    /// Device-list changes and key counts.
    #[serde(default)]
    pub e2ee: Toggle,
    /// Global and per-room account data.
    #[serde(default)]
    pub account_data: Toggle,
    /// Read receipts.
    #[serde(default)]
    pub receipts: Toggle,
    /// Typing notifications.
    #[serde(default)]
    pub typing: Toggle,
}

/// Reads a request body (with what carried over from the connection's previous request
/// filled in): the request, and the to-device `since` token when that extension is on.
pub(crate) fn read_request(body: &Value) -> Result<(Request, Option<i64>)> {
    let req: Request = serde_json::from_value(body.clone())
        .map_err(|e| MatrixError::bad_json(format!("Invalid request: {e}")))?;
    validate(&req)?;
    let to_device_since = match req.extensions.to_device.since.as_deref() {
        Some(s) if req.extensions.to_device.enabled == Some(true) => Some(
            s.parse::<i64>()
                .map_err(|_| MatrixError::invalid_param("Invalid to_device since token"))?,
        ),
        _ => None,
    };
    Ok((req, to_device_since))
}

/// Checks what serde cannot.
fn validate(req: &Request) -> Result<()> {
    for (name, list) in &req.lists {
        if list.ranges.iter().any(|(a, b)| a > b) {
            return Err(MatrixError::invalid_param(format!(
                "List {name} has a range whose start is past its end"
            ))
            .into());
        }
    }
    // Every selected room holds the rules of the lists that show it: their size is bounded
    // for the whole request, far above what clients send (a few dozen short rules).
    let rules = req
        .lists
        .values()
        .map(|l| &l.params)
        .chain(req.room_subscriptions.values())
        .flat_map(|p| &p.required_state);
    let (mut count, mut bytes) = (0usize, 0usize);
    for (ty, key) in rules {
        count += 1;
        bytes += ty.len() + key.len();
    }
    if count > MAX_REQUIRED_STATE_RULES || bytes > MAX_REQUIRED_STATE_BYTES {
        return Err(MatrixError::invalid_param(format!(
            "required_state asks for too much: at most {MAX_REQUIRED_STATE_RULES} rules of \
             {MAX_REQUIRED_STATE_BYTES} bytes in all per request"
        ))
        .into());
    }
    Ok(())
}

/// Most `required_state` rules in one request, over all lists and room subscriptions.
const MAX_REQUIRED_STATE_RULES: usize = 1_000;
/// Most bytes of `required_state` rules in one request.
const MAX_REQUIRED_STATE_BYTES: usize = 16 * 1024;

/// Fills in what a request leaves out from the connection's previous request: older clients
/// (MSC3575) send a list's `required_state`, `filters` and `timeline_limit`, and the
/// extensions' settings, only when they change.
pub(crate) fn apply_sticky(body: &mut Value, stored: &Value) {
    let Some(body) = body.as_object_mut() else {
        return;
    };
    if let (Some(lists), Some(old_lists)) = (
        body.get_mut("lists").and_then(Value::as_object_mut),
        stored.get("lists").and_then(Value::as_object),
    ) {
        for (name, list) in lists.iter_mut() {
            let (Some(list), Some(old)) = (
                list.as_object_mut(),
                old_lists.get(name).and_then(Value::as_object),
            ) else {
                continue;
            };
            for field in ["required_state", "filters", "timeline_limit"] {
                if !list.contains_key(field)
                    && let Some(v) = old.get(field)
                {
                    list.insert(field.into(), v.clone());
                }
            }
        }
    }
    if let Some(old_ext) = stored.get("extensions").and_then(Value::as_object) {
        let ext = body
            .entry("extensions")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(ext) = ext.as_object_mut() else {
            return;
        };
        for (name, old) in old_ext {
            let Some(old) = old.as_object() else {
                continue;
            };
            let current = ext
                .entry(name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(current) = current.as_object_mut() {
                // `since` moves on with every response: never carried over.
                for (k, v) in old {
                    if k != "since" && !current.contains_key(k) {
                        current.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
}
