//! The end-to-end encryption part of a `/sync` response: to-device messages, device-list
//! changes, one-time key counts and unused fallback key types.
//!
//! To-device messages are stored at stream positions. A sync delivers those above its
//! `since` token; the next sync, whose `since` is past them, acknowledges and deletes them.
//! When more are waiting than one response carries, `next_batch` gets a `_d{pos}` part: the
//! position up to which to-device messages were delivered.

use std::collections::BTreeSet;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::{
    error::Result,
    storage::{keys as store, to_device},
};

/// The most to-device messages one sync response carries.
pub const TO_DEVICE_LIMIT: usize = 100;

/// The algorithm whose one-time key count is always reported (clients read a missing count
/// as "the server does not know it", not as zero).
pub(crate) const SIGNED_CURVE25519: &str = "signed_curve25519";

/// What a sync response carries for end-to-end encryption.
#[derive(Debug, Default)]
pub struct SyncSection {
    /// To-device events for the syncing device.
    pub to_device: Vec<Value>,
    /// Set when messages were left for the next sync: to-device messages up to this
    /// position were delivered.
    pub to_device_upto: Option<i64>,
    /// Set when the device's inbox still holds messages the `since` token acknowledges:
    /// they may be deleted up to this position.
    pub acknowledged_upto: Option<i64>,
    /// Users whose devices or keys changed, or who newly share a room with the user.
    pub changed: Vec<String>,
    /// Users who no longer share any room with the user.
    pub left: Vec<String>,
    /// Unclaimed one-time keys of the device, per algorithm.
    pub one_time_key_counts: Map<String, Value>,
    /// Algorithms of the device's fallback keys that were never claimed.
    pub unused_fallback_key_types: Vec<String>,
}

impl SyncSection {
    /// Builds the section for `device` of `user`, between `since` (absent on an initial
    /// sync) and `now_pos`. `since_to_device` is the `_d` part of the `since` token.
    pub fn build(
        conn: &Connection,
        user: &str,
        device: &str,
        since: Option<i64>,
        since_to_device: Option<i64>,
        now_pos: i64,
    ) -> Result<Self> {
        let mut section = SyncSection::default();

        // To-device messages.
        let delivered_upto = since.map(|s| since_to_device.map_or(s, |d| d.min(s)));
        if let Some(upto) = delivered_upto
            && to_device::has_delivered(conn, user, device, upto)?
        {
            section.acknowledged_upto = Some(upto);
        }
        let after = delivered_upto.unwrap_or(0);
        let mut rows = to_device::pending(conn, user, device, after, now_pos, TO_DEVICE_LIMIT + 1)?;
        if rows.len() > TO_DEVICE_LIMIT {
            // Deliver whole stream positions only, so that the `_d` mark is exact.
            let first_left = rows[TO_DEVICE_LIMIT].stream;
            let whole: Vec<_> = rows
                .iter()
                .filter(|r| r.stream < first_left)
                .cloned()
                .collect();
            if whole.is_empty() {
                section.to_device_upto = Some(first_left);
            } else {
                rows = whole;
                section.to_device_upto = Some(first_left - 1);
            }
        }
        for row in rows {
            section.to_device.push(json!({
                "sender": row.sender,
                "type": row.event_type,
                "content": serde_json::from_str::<Value>(&row.content)?,
            }));
        }

        // Device lists: only incremental syncs carry them.
        if let Some(since) = since {
            let (changed, left) = device_list_delta(conn, user, since, now_pos)?;
            section.changed = changed;
            section.left = left;
        }

        // One-time and fallback keys.
        section
            .one_time_key_counts
            .insert(SIGNED_CURVE25519.into(), json!(0));
        for (algorithm, count) in store::one_time_key_counts(conn, user, device)? {
            section.one_time_key_counts.insert(algorithm, json!(count));
        }
        section.unused_fallback_key_types = store::unused_fallback_key_types(conn, user, device)?;
        Ok(section)
    }

    /// Whether the section holds anything that makes a long-polling sync return.
    pub fn has_news(&self) -> bool {
        !self.to_device.is_empty() || !self.changed.is_empty() || !self.left.is_empty()
    }

    /// Writes the section's fields into a sync response body.
    pub fn write_into(self, body: &mut Value) {
        body["to_device"] = json!({ "events": self.to_device });
        body["device_lists"] = json!({ "changed": self.changed, "left": self.left });
        body["device_one_time_keys_count"] = Value::Object(self.one_time_key_counts);
        body["device_unused_fallback_key_types"] = json!(self.unused_fallback_key_types);
    }
}

/// Device-list changes `user` must learn of in `(after, upto]`: `(changed, left)`.
///
/// `changed` holds users sharing a room with `user` (joined or invited) whose devices or keys
/// changed, users who came to share a room with them, and `user` themselves if their own
/// devices changed. `left` holds users who shared a room with `user` and now share none.
pub fn device_list_delta(
    conn: &Connection,
    user: &str,
    after: i64,
    upto: i64,
) -> Result<(Vec<String>, Vec<String>)> {
    if upto <= after {
        return Ok((Vec::new(), Vec::new()));
    }
    let key_changes = store::device_lists_changed_between(conn, after, upto)?;
    let membership_changes = store::membership_changes_between(conn, user, after, upto)?;
    if key_changes.is_empty() && membership_changes.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut candidates_changed: BTreeSet<String> = key_changes.into_iter().collect();
    let mut candidates_left: BTreeSet<String> = BTreeSet::new();
    for change in membership_changes {
        let present = matches!(change.membership.as_str(), "join" | "invite");
        if change.user_id == user {
            // The user joined (everyone there is new to them) or left (everyone there may be gone).
            let members = store::current_members(conn, &change.room_id)?;
            if present {
                candidates_changed.extend(members);
            } else {
                candidates_left.extend(members);
            }
        } else if present {
            candidates_changed.insert(change.user_id);
        } else {
            candidates_left.insert(change.user_id);
        }
    }
    let sharing: BTreeSet<String> = store::users_sharing_a_room(conn, user)?
        .into_iter()
        .collect();
    let changed = candidates_changed
        .into_iter()
        .filter(|u| u == user || sharing.contains(u))
        .collect();
    let left = candidates_left
        .into_iter()
        .filter(|u| u != user && !sharing.contains(u))
        .collect();
    Ok((changed, left))
}
