//! Event filters (`/user/{userId}/filter`, `filter=` on `/sync`, `/messages` and `/context`).

use serde::{Deserialize, Serialize};

use crate::storage::events::StoredEvent;

/// A filter on a room's events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomEventFilter {
    /// Maximum number of events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Event types to include (`*` wildcards allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// Event types to exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_types: Vec<String>,
    /// Senders to include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    /// Senders to exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_senders: Vec<String>,
    /// Rooms to include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Rooms to exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_rooms: Vec<String>,
    /// Only send membership events for the senders of returned events.
    #[serde(default)]
    pub lazy_load_members: bool,
    /// With lazy loading, send members again even if the client has seen them.
    #[serde(default)]
    pub include_redundant_members: bool,
    /// Only events with (true) or without (false) a `url` in their content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_url: Option<bool>,
    /// In `/sync`, count notifications of threads apart from the main timeline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unread_thread_notifications: bool,
}

/// A filter on non-room events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventFilter {
    /// Maximum number of events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Event types to include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// Event types to exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_types: Vec<String>,
    /// Senders to include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    /// Senders to exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_senders: Vec<String>,
}

/// The room part of a sync filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomFilter {
    /// Rooms to include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Rooms to exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_rooms: Vec<String>,
    /// Whether to include rooms the user has left.
    #[serde(default)]
    pub include_leave: bool,
    /// Filter for timelines.
    #[serde(default)]
    pub timeline: RoomEventFilter,
    /// Filter for state.
    #[serde(default)]
    pub state: RoomEventFilter,
    /// Filter for ephemeral events.
    #[serde(default)]
    pub ephemeral: RoomEventFilter,
    /// Filter for room account data.
    #[serde(default)]
    pub account_data: RoomEventFilter,
}

/// The formats a filter may ask events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// The client-server format.
    Client,
    /// The federation (PDU) format.
    Federation,
}

/// A full filter definition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Fields to include (accepted, not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_fields: Option<Vec<String>>,
    /// `client` or `federation` (accepted; events are always in client format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_format: Option<EventFormat>,
    /// Presence filter.
    #[serde(default)]
    pub presence: EventFilter,
    /// Global account data filter.
    #[serde(default)]
    pub account_data: EventFilter,
    /// Room filters.
    #[serde(default)]
    pub room: RoomFilter,
}

/// Matches a type against a pattern with `*` wildcards (any run of characters, also none).
///
/// Linear in the lengths of both: the pieces between the stars must appear in order, the
/// first at the start and the last at the end, and taking each middle piece at its leftmost
/// place leaves the most room for the rest, so no choice is ever revisited.
pub fn type_matches(pattern: &str, ty: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = ty.strip_prefix(first) else {
        return false;
    };
    let Some(last) = pieces.next_back() else {
        // No star at all: the pattern is the whole type.
        return rest.is_empty();
    };
    for piece in pieces {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn list_allows(allow: &Option<Vec<String>>, deny: &[String], value: &str, wildcard: bool) -> bool {
    let hit = |p: &String| {
        if wildcard {
            type_matches(p, value)
        } else {
            p == value
        }
    };
    if deny.iter().any(hit) {
        return false;
    }
    allow.as_ref().is_none_or(|a| a.iter().any(hit))
}

impl RoomEventFilter {
    /// Whether an event passes the filter.
    pub fn matches(&self, ev: &StoredEvent) -> bool {
        if !list_allows(&self.types, &self.not_types, &ev.event_type, true)
            || !list_allows(&self.senders, &self.not_senders, &ev.sender, false)
            || !list_allows(&self.rooms, &self.not_rooms, &ev.room_id, false)
        {
            return false;
        }
        if let Some(want) = self.contains_url {
            let has = serde_json::from_str::<serde_json::Value>(&ev.json)
                .ok()
                .and_then(|v| v.pointer("/content/url").map(|u| u.is_string()))
                .unwrap_or(false);
            if has != want {
                return false;
            }
        }
        true
    }

    /// Whether a room passes the filter's room lists.
    pub fn allows_room(&self, room_id: &str) -> bool {
        list_allows(&self.rooms, &self.not_rooms, room_id, false)
    }
}

impl EventFilter {
    /// Whether an event of this type passes.
    pub fn allows_type(&self, ty: &str) -> bool {
        list_allows(&self.types, &self.not_types, ty, true)
    }
}

impl RoomFilter {
    /// Whether a room passes.
    pub fn allows_room(&self, room_id: &str) -> bool {
        list_allows(&self.rooms, &self.not_rooms, room_id, false)
    }
}

#[cfg(test)]
mod tests {
    use super::type_matches;

    #[test]
    fn wildcards() {
        assert!(type_matches("m.*", "m.room.message"));
        assert!(type_matches("m.room.*", "m.room.name"));
        assert!(!type_matches("m.room.*", "m.typing"));
        assert!(type_matches("*", "anything"));
        assert!(type_matches("m.room.message", "m.room.message"));
        assert!(!type_matches("m.room.message", "m.room.messages"));
        assert!(type_matches("*.name", "m.room.name"));
        assert!(type_matches("m.*.*", "m.room.name"));
        assert!(type_matches("m.**name", "m.room.name"));
        assert!(type_matches("m.*", "m."));
        assert!(!type_matches("m.*", "m"));
        assert!(type_matches("a*b*a", "aba"));
        assert!(!type_matches("a*b*a", "ab"));
        assert!(!type_matches("ab*ba", "aba"));
        assert!(type_matches("ab*ba", "abba"));
        assert!(type_matches("*é*", "m.café.x"));
        assert!(type_matches("", ""));
        assert!(!type_matches("", "x"));
    }

    #[test]
    fn many_stars_against_a_long_type_answer_at_once() {
        // With backtracking this pattern costs about n^8 steps against n letters a.
        let pattern = "a*a*a*a*a*a*a*a*b";
        let long = "a".repeat(100_000);
        let start = std::time::Instant::now();
        assert!(!type_matches(pattern, &long));
        assert!(type_matches(pattern, &(long.clone() + "b")));
        let stars = "*".repeat(10_000) + "b";
        assert!(!type_matches(&stars, &long));
        eprintln!("pathological globs took {:?}", start.elapsed());
    }
}
