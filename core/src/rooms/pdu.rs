//! The PDU: an event of the room graph, in the shape `ruma::state_res` checks.

use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId, events::TimelineEventType,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// A parsed PDU with its event id.
#[derive(Clone, Debug)]
pub struct Pdu {
    /// The event id (computed from the reference hash for v3+ rooms).
    pub event_id: OwnedEventId,
    /// Fields of the PDU.
    pub data: PduData,
    /// The event this one redacts (top-level `redacts` or, since v11, `content.redacts`).
    pub redacts: Option<OwnedEventId>,
    /// Whether the event was rejected.
    pub rejected: bool,
}

/// The fields of a PDU this node reads.
#[derive(Clone, Debug, Deserialize)]
pub struct PduData {
    /// Room id (absent on v12 create events).
    pub room_id: Option<OwnedRoomId>,
    /// Sender.
    pub sender: OwnedUserId,
    /// Origin timestamp.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    /// Content.
    pub content: Box<RawValue>,
    /// State key.
    pub state_key: Option<String>,
    /// Prev events.
    #[serde(default)]
    pub prev_events: Vec<OwnedEventId>,
    /// Auth events.
    #[serde(default)]
    pub auth_events: Vec<OwnedEventId>,
    /// Top-level `redacts` (before v11).
    pub redacts: Option<OwnedEventId>,
    /// Depth.
    pub depth: UInt,
}

#[derive(Deserialize)]
struct RedactsContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a PDU from its JSON text.
    pub fn from_json(event_id: &str, json: &str) -> Result<Self> {
        let data: PduData = serde_json::from_str(json)?;
        let event_id = EventId::parse(event_id).map_err(|e| Error::Event(e.to_string()))?;
        Ok(Self::from_parts(event_id, data))
    }

    /// Parses a PDU from a canonical JSON object.
    pub fn from_object(event_id: OwnedEventId, obj: &CanonicalJsonObject) -> Result<Self> {
        let json = serde_json::to_string(obj)?;
        let data: PduData = serde_json::from_str(&json)?;
        Ok(Self::from_parts(event_id, data))
    }

    fn from_parts(event_id: OwnedEventId, data: PduData) -> Self {
        let redacts = data.redacts.clone().or_else(|| {
            if data.kind == TimelineEventType::RoomRedaction {
                serde_json::from_str::<RedactsContent>(data.content.get())
                    .ok()
                    .and_then(|c| c.redacts)
            } else {
                None
            }
        });
        Self {
            event_id,
            data,
            redacts,
            rejected: false,
        }
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.data.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.data.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.data.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.data.kind
    }

    fn content(&self) -> &RawValue {
        &self.data.content
    }

    fn state_key(&self) -> Option<&str> {
        self.data.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.data.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.data.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}
