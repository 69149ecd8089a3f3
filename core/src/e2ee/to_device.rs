//! To-device messages: `/sendToDevice` puts them in per-device inboxes; `/sync` delivers
//! them (see [`super::sync`]) and deletes them once the device has acknowledged them.

use std::collections::{BTreeMap, HashMap, hash_map::Entry};

use ruma::UserId;
use serde_json::{Map, Value, json};

use super::E2ee;
use crate::{
    accounts::random_string,
    error::{MatrixError, Result},
    storage::{accounts, federation_e2ee as fed_store, now_ms, to_device as store},
};

impl E2ee {
    /// Sends `event_type` messages to devices (`*` for all of a user's devices), once per
    /// sending device and transaction id: a retry with the same id stores nothing more.
    /// Unknown local devices are skipped; messages for users of other servers are queued for
    /// their server as `m.direct_to_device` EDUs.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &str,
        event_type: &str,
        txn_id: &str,
        messages: BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<()> {
        let mut local: Vec<(String, String, String)> = Vec::new();
        // Messages for users of other servers: one EDU per server, sent through the outbox.
        let mut remote: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (user, devices) in &messages {
            let user_id = UserId::parse(user.as_str())
                .map_err(|_| MatrixError::invalid_param(format!("Invalid user id {user:?}")))?;
            if devices.values().any(|c| !c.is_object()) {
                return Err(MatrixError::bad_json("Message content must be an object").into());
            }
            if user_id.server_name() != self.server_name {
                remote
                    .entry(user_id.server_name().to_string())
                    .or_default()
                    .insert(user.clone(), json!(devices));
                continue;
            }
            for (device, content) in devices {
                local.push((
                    user.clone(),
                    device.clone(),
                    serde_json::to_string(content)?,
                ));
            }
        }
        let remote_edus: Vec<(String, String)> = remote
            .into_iter()
            .map(|(server, messages)| {
                let edu = json!({
                    "edu_type": "m.direct_to_device",
                    "content": {
                        "sender": sender.as_str(),
                        "type": event_type,
                        "message_id": random_string(24),
                        "messages": messages,
                    },
                });
                (server, edu.to_string())
            })
            .collect();
        let (sender, sender_device, event_type, txn_id) = (
            sender.to_string(),
            sender_device.to_owned(),
            event_type.to_owned(),
            txn_id.to_owned(),
        );
        let stored = self
            .db
            .write(move |txn| {
                if !store::record_txn(txn, &sender, &sender_device, &txn_id, now_ms())? {
                    return Ok(false);
                }
                for (server, edu) in &remote_edus {
                    fed_store::enqueue_edu(txn, server, edu)?;
                }
                let pos = txn.next_pos();
                let mut devices_of: HashMap<&str, Vec<String>> = HashMap::new();
                let mut stored = false;
                for (user, device, content) in &local {
                    let known = match devices_of.entry(user.as_str()) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => e.insert(
                            accounts::list_devices(txn, user)?
                                .into_iter()
                                .map(|d| d.device_id)
                                .collect(),
                        ),
                    };
                    for target in known.iter() {
                        if device == "*" || device == target {
                            store::insert(txn, user, target, pos, &sender, &event_type, content)?;
                            stored = true;
                        }
                    }
                }
                Ok(stored || !remote_edus.is_empty())
            })
            .await?;
        if stored {
            self.notifier.notify();
        }
        Ok(())
    }
}
