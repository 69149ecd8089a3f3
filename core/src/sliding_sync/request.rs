//! The request body of simplified sliding sync (MSC4186).

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

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
