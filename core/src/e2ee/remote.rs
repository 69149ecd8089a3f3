//! End-to-end encryption across servers, the parts that need no network: keys served to other
//! servers, device-list updates announced to them (`m.device_list_update`,
//! `m.signing_key_update` EDUs through the outbox), the cache of remote users' device lists
//! kept up to date by their updates, and to-device messages received from other servers.
//!
//! The requests to other servers are made by [`crate::federation::devices`].

use std::collections::BTreeMap;

use ruma::UserId;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{
    E2ee,
    cross_signing::public_cross_signing_keys,
    device_keys::{claim_for_user, user_keys},
};
use crate::{
    error::{MatrixError, Result},
    storage::{
        accounts, events as ev_store, federation_e2ee as fed_store, keys as store, now_ms,
        to_device as inbox,
    },
};

/// Most to-device messages from one other server that wait in one device's inbox; past it,
/// more are dropped until the device has read some.
const MAX_PENDING_FROM_SERVER: usize = 1_000;

/// The server part of a user id.
pub(crate) fn server_of(user: &str) -> Option<&str> {
    user.split_once(':').map(|(_, s)| s)
}

/// A remote user's device list as cached: device keys by device id (with
/// `unsigned.device_display_name`), and cross-signing keys.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RemoteDeviceList {
    /// Device keys by device id.
    #[serde(default)]
    pub devices: Map<String, Value>,
    /// The master key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Value>,
    /// The self-signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signing_key: Option<Value>,
}

impl RemoteDeviceList {
    /// Reads a `/user/devices` response of `user`'s server: `(stream_id, list)`. Devices whose
    /// keys name another user or device are dropped.
    pub fn from_user_devices(user: &str, body: &Value) -> Option<(i64, Self)> {
        if body["user_id"].as_str() != Some(user) {
            return None;
        }
        let stream_id = body["stream_id"].as_i64().unwrap_or(0);
        let mut list = RemoteDeviceList::default();
        for device in body["devices"].as_array().into_iter().flatten() {
            let Some(id) = device["device_id"].as_str() else {
                continue;
            };
            if let Some(keys) =
                device_entry(user, id, &device["keys"], &device["device_display_name"])
            {
                list.devices.insert(id.to_owned(), keys);
            }
        }
        list.master_key = cross_signing_key_of(user, &body["master_key"]);
        list.self_signing_key = cross_signing_key_of(user, &body["self_signing_key"]);
        Some((stream_id, list))
    }

    /// Reads one user's part of a federation `/user/keys/query` response.
    pub fn from_keys_query(user: &str, body: &Value) -> Self {
        let mut list = RemoteDeviceList::default();
        for (id, keys) in body["device_keys"][user].as_object().into_iter().flatten() {
            let name = &keys["unsigned"]["device_display_name"];
            if let Some(keys) = device_entry(user, id, keys, name) {
                list.devices.insert(id.clone(), keys);
            }
        }
        list.master_key = cross_signing_key_of(user, &body["master_keys"][user]);
        list.self_signing_key = cross_signing_key_of(user, &body["self_signing_keys"][user]);
        list
    }

    /// The keys of `devices` (all when empty), as `/keys/query` answers them.
    pub fn device_keys(&self, devices: &[String]) -> Map<String, Value> {
        self.devices
            .iter()
            .filter(|(id, _)| devices.is_empty() || devices.contains(id))
            .map(|(id, k)| (id.clone(), k.clone()))
            .collect()
    }
}

/// Device keys as cached, if they are well formed and belong to `user`'s device `device`.
fn device_entry(user: &str, device: &str, keys: &Value, display_name: &Value) -> Option<Value> {
    let obj = keys.as_object()?;
    if obj.get("user_id")?.as_str()? != user || obj.get("device_id")?.as_str()? != device {
        return None;
    }
    if !obj.get("keys").is_some_and(Value::is_object) {
        return None;
    }
    let mut keys = keys.clone();
    if let Some(name) = display_name.as_str() {
        keys["unsigned"] = json!({ "device_display_name": name });
    } else if let Some(map) = keys.as_object_mut() {
        map.remove("unsigned");
    }
    Some(keys)
}

/// A cross-signing key, if it is an object that belongs to `user`.
fn cross_signing_key_of(user: &str, key: &Value) -> Option<Value> {
    (key["user_id"].as_str() == Some(user) && key["keys"].is_object()).then(|| key.clone())
}

/// Tells every server sharing a room with local `user` that the listed devices changed
/// (or were deleted): one `m.device_list_update` EDU per device, chained by `prev_id`.
pub fn announce_devices(conn: &Connection, user: &str, devices: &[String]) -> Result<()> {
    let Some(local) = server_of(user) else {
        return Ok(());
    };
    let servers = fed_store::servers_sharing_with(conn, user, local)?;
    for device in devices {
        let (prev, stream_id) = fed_store::next_outbound_stream(conn, user)?;
        if servers.is_empty() {
            continue;
        }
        let mut content = json!({
            "user_id": user,
            "device_id": device,
            "stream_id": stream_id,
            "prev_id": if prev > 0 { vec![prev] } else { Vec::new() },
        });
        match accounts::get_device(conn, user, device)? {
            None => content["deleted"] = json!(true),
            Some(row) => {
                let keys = user_keys(conn, user, std::slice::from_ref(device), None)?;
                if let Some(mut k) = keys.devices.get(device).cloned() {
                    if let Some(map) = k.as_object_mut() {
                        map.remove("unsigned");
                    }
                    content["keys"] = k;
                }
                if let Some(name) = row.display_name {
                    content["device_display_name"] = json!(name);
                }
            }
        }
        let edu = json!({ "edu_type": "m.device_list_update", "content": content }).to_string();
        for server in &servers {
            fed_store::enqueue_edu(conn, server, &edu)?;
        }
    }
    Ok(())
}

/// Tells every server sharing a room with local `user` about their master and self-signing
/// keys (`m.signing_key_update`).
pub fn announce_signing_keys(conn: &Connection, user: &str) -> Result<()> {
    let Some(local) = server_of(user) else {
        return Ok(());
    };
    let servers = fed_store::servers_sharing_with(conn, user, local)?;
    if servers.is_empty() {
        return Ok(());
    }
    let (master, ssk) = public_cross_signing_keys(conn, user, None)?;
    let mut content = json!({ "user_id": user });
    if let Some(master) = master {
        content["master_key"] = master;
    }
    if let Some(ssk) = ssk {
        content["self_signing_key"] = ssk;
    }
    let edu = json!({ "edu_type": "m.signing_key_update", "content": content }).to_string();
    for server in &servers {
        fed_store::enqueue_edu(conn, server, &edu)?;
    }
    Ok(())
}

/// The master key of a remote user as cached, in the shape of a stored key.
pub(crate) fn cached_master_key(
    conn: &Connection,
    user: &str,
) -> Result<Option<store::CrossSigningKeyRow>> {
    let Some((_, json)) = fed_store::remote_device_list(conn, user)? else {
        return Ok(None);
    };
    let list: RemoteDeviceList = serde_json::from_str(&json)?;
    let Some(mut master) = list.master_key else {
        return Ok(None);
    };
    let public = master["keys"]
        .as_object()
        .and_then(|k| k.values().next())
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(public_key) = public else {
        return Ok(None);
    };
    // Signatures are checked over the key without them.
    if let Some(map) = master.as_object_mut() {
        map.remove("signatures");
    }
    Ok(Some(store::CrossSigningKeyRow {
        public_key,
        json: serde_json::to_string(&master)?,
    }))
}

/// Lists every current device of local `user` (before they are deleted, to announce them).
pub fn device_ids(conn: &Connection, user: &str) -> Result<Vec<String>> {
    Ok(accounts::list_devices(conn, user)?
        .into_iter()
        .map(|d| d.device_id)
        .collect())
}

impl E2ee {
    /// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's devices with their
    /// keys, the id of the last update announced, and their cross-signing keys.
    pub async fn user_devices_for_server(&self, user: &str) -> Result<Value> {
        if !self.is_local(user) {
            return Err(MatrixError::not_found("Not a user of this server").into());
        }
        let user = user.to_owned();
        self.db
            .read(move |conn| {
                let keys = user_keys(conn, &user, &[], None)?;
                let mut devices = Vec::new();
                for (id, mut k) in keys.devices {
                    let name = k["unsigned"]["device_display_name"].clone();
                    if let Some(map) = k.as_object_mut() {
                        map.remove("unsigned");
                    }
                    let mut device = json!({ "device_id": id, "keys": k });
                    if name.is_string() {
                        device["device_display_name"] = name;
                    }
                    devices.push(device);
                }
                let mut body = json!({
                    "user_id": user,
                    "stream_id": fed_store::outbound_stream(conn, &user)?,
                    "devices": devices,
                });
                if let Some(master) = keys.master_key {
                    body["master_key"] = master;
                }
                if let Some(ssk) = keys.self_signing_key {
                    body["self_signing_key"] = ssk;
                }
                Ok(body)
            })
            .await
    }

    /// `POST /_matrix/federation/v1/user/keys/query`: keys of local users for another server.
    /// Users of other servers are left out.
    pub async fn query_keys_for_server(
        &self,
        requested: BTreeMap<String, Vec<String>>,
    ) -> Result<Value> {
        let requested: Vec<(String, Vec<String>)> = requested
            .into_iter()
            .filter(|(u, _)| self.is_local(u))
            .collect();
        self.db
            .read(move |conn| {
                let (mut device_keys, mut master_keys, mut self_signing_keys) =
                    (Map::new(), Map::new(), Map::new());
                for (user, devices) in &requested {
                    let keys = user_keys(conn, user, devices, None)?;
                    device_keys.insert(user.clone(), Value::Object(keys.devices));
                    if let Some(k) = keys.master_key {
                        master_keys.insert(user.clone(), k);
                    }
                    if let Some(k) = keys.self_signing_key {
                        self_signing_keys.insert(user.clone(), k);
                    }
                }
                Ok(json!({
                    "device_keys": device_keys,
                    "master_keys": master_keys,
                    "self_signing_keys": self_signing_keys,
                }))
            })
            .await
    }

    /// `POST /_matrix/federation/v1/user/keys/claim`: one-time keys of local users' devices
    /// for another server.
    pub async fn claim_keys_for_server(
        &self,
        requested: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Value> {
        let requested: Vec<(String, BTreeMap<String, String>)> = requested
            .into_iter()
            .filter(|(u, _)| self.is_local(u))
            .collect();
        self.db
            .write(move |txn| {
                let mut claimed = Map::new();
                for (user, devices) in &requested {
                    let per_device = claim_for_user(txn, user, devices)?;
                    if !per_device.is_empty() {
                        claimed.insert(user.clone(), Value::Object(per_device));
                    }
                }
                Ok(json!({ "one_time_keys": claimed }))
            })
            .await
    }

    /// The cached device lists of remote users this server tracks (those joined to a room
    /// with a local user, whose server announces every change here). Users not tracked or
    /// not cached are absent.
    pub async fn cached_device_lists(
        &self,
        users: Vec<String>,
    ) -> Result<BTreeMap<String, RemoteDeviceList>> {
        let local = self.server_name.to_string();
        self.db
            .read(move |conn| {
                let mut out = BTreeMap::new();
                for user in users {
                    if !fed_store::is_tracked(conn, &user, &local)? {
                        continue;
                    }
                    if let Some(json) = fed_store::current_remote_device_list(conn, &user)? {
                        out.insert(user, serde_json::from_str(&json)?);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Whether each remote user is tracked (see [`E2ee::cached_device_lists`]).
    pub async fn tracked_users(&self, users: Vec<String>) -> Result<Vec<(String, bool)>> {
        let local = self.server_name.to_string();
        self.db
            .read(move |conn| {
                users
                    .into_iter()
                    .map(|u| {
                        let tracked = fed_store::is_tracked(conn, &u, &local)?;
                        Ok((u, tracked))
                    })
                    .collect()
            })
            .await
    }

    /// Adds to a `/keys/query` answer the signatures `caller` made of the master keys of
    /// users of other servers in it (with their user-signing key): only the caller sees them.
    pub async fn add_own_signatures_of_remote_keys(
        &self,
        caller: &str,
        body: &mut Value,
    ) -> Result<()> {
        let targets: Vec<(String, String)> = body["master_keys"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(user, _)| !self.is_local(user))
            .filter_map(|(user, key)| {
                let public = key["keys"].as_object()?.values().next()?.as_str()?;
                Some((user.clone(), public.to_owned()))
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let caller = caller.to_owned();
        let found = self
            .db
            .read(move |conn| {
                let mut out = Vec::new();
                for (user, public) in targets {
                    for sig in store::signatures_of(conn, &user, &public)? {
                        if sig.signer_user == caller {
                            out.push((user.clone(), sig));
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        for (user, sig) in found {
            let key = &mut body["master_keys"][&user];
            if !key["signatures"].is_object() {
                key["signatures"] = json!({});
            }
            if !key["signatures"][&sig.signer_user].is_object() {
                key["signatures"][&sig.signer_user] = json!({});
            }
            key["signatures"][&sig.signer_user][&sig.signer_key_id] = json!(sig.signature);
        }
        Ok(())
    }

    /// Caches a remote user's device list fetched from their server, at `stream_id`;
    /// `fetched_at` is the local stream position taken before asking.
    pub async fn cache_device_list(
        &self,
        user: &str,
        stream_id: i64,
        fetched_at: i64,
        list: &RemoteDeviceList,
    ) -> Result<()> {
        let (user, json) = (user.to_owned(), serde_json::to_string(list)?);
        self.db
            .write(move |txn| {
                fed_store::cache_remote_device_list(txn, &user, stream_id, fetched_at, &json)
            })
            .await
    }

    /// The current stream position (to stamp fetched device lists with).
    pub fn current_pos(&self) -> i64 {
        self.db.current_pos()
    }

    /// Applies an `m.device_list_update` from `origin`. An update that follows the cached
    /// version is applied to the cache; after a gap the cache is dropped, and the user id
    /// is returned: their whole list must be fetched again. Local users sharing a room see
    /// the user in `device_lists.changed` either way.
    pub async fn receive_device_list_update(
        &self,
        origin: &str,
        content: &Value,
    ) -> Result<Option<String>> {
        let (Some(user), Some(device), Some(stream_id)) = (
            content["user_id"].as_str(),
            content["device_id"].as_str(),
            content["stream_id"].as_i64(),
        ) else {
            return Ok(None);
        };
        if server_of(user) != Some(origin) || UserId::parse(user).is_err() {
            return Ok(None);
        }
        let prev: Vec<i64> = content["prev_id"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let deleted = content["deleted"].as_bool().unwrap_or(false);
        let entry = device_entry(
            user,
            device,
            &content["keys"],
            &content["device_display_name"],
        );
        let (user, device) = (user.to_owned(), device.to_owned());
        let gap_user = user.clone();
        let (changed, gap) = self
            .db
            .write(move |txn| {
                let mut gap = false;
                if let Some((cached, json)) = fed_store::remote_device_list(txn, &user)? {
                    if stream_id <= cached {
                        return Ok((false, false));
                    }
                    let follows = prev.contains(&cached) || (prev.is_empty() && cached == 0);
                    if follows {
                        let mut list: RemoteDeviceList = serde_json::from_str(&json)?;
                        match (deleted, entry) {
                            (true, _) => {
                                list.devices.remove(&device);
                            }
                            (false, Some(keys)) => {
                                list.devices.insert(device.clone(), keys);
                            }
                            (false, None) => {}
                        }
                        let json = serde_json::to_string(&list)?;
                        fed_store::update_remote_device_list(txn, &user, stream_id, &json)?;
                    } else {
                        fed_store::delete_remote_device_list(txn, &user)?;
                        gap = true;
                    }
                }
                let pos = txn.next_pos();
                store::mark_device_list_changed(txn, &user, pos)?;
                Ok((true, gap))
            })
            .await?;
        if changed {
            self.notifier.notify();
        }
        Ok(gap.then_some(gap_user))
    }

    /// Applies an `m.signing_key_update` from `origin` to the cache, and lets local users
    /// sharing a room know.
    pub async fn receive_signing_key_update(&self, origin: &str, content: &Value) -> Result<()> {
        let Some(user) = content["user_id"].as_str() else {
            return Ok(());
        };
        if server_of(user) != Some(origin) || UserId::parse(user).is_err() {
            return Ok(());
        }
        let master = cross_signing_key_of(user, &content["master_key"]);
        let ssk = cross_signing_key_of(user, &content["self_signing_key"]);
        let user = user.to_owned();
        self.db
            .write(move |txn| {
                if let Some((stream_id, json)) = fed_store::remote_device_list(txn, &user)? {
                    let mut list: RemoteDeviceList = serde_json::from_str(&json)?;
                    if master.is_some() {
                        list.master_key = master;
                    }
                    if ssk.is_some() {
                        list.self_signing_key = ssk;
                    }
                    let json = serde_json::to_string(&list)?;
                    fed_store::update_remote_device_list(txn, &user, stream_id, &json)?;
                }
                let pos = txn.next_pos();
                store::mark_device_list_changed(txn, &user, pos)
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }

    /// Delivers an `m.direct_to_device` EDU from `origin` to local devices, once per
    /// `message_id`: a retried transaction stores nothing more.
    pub async fn receive_to_device(&self, origin: &str, content: &Value) -> Result<()> {
        let (Some(sender), Some(event_type), Some(message_id), Some(messages)) = (
            content["sender"].as_str(),
            content["type"].as_str(),
            content["message_id"].as_str(),
            content["messages"].as_object(),
        ) else {
            return Ok(());
        };
        if server_of(sender) != Some(origin) {
            return Ok(());
        }
        let mut local: Vec<(String, String, String)> = Vec::new();
        for (user, devices) in messages {
            if !self.is_local(user) {
                continue;
            }
            for (device, message) in devices.as_object().into_iter().flatten() {
                if message.is_object() {
                    local.push((user.clone(), device.clone(), message.to_string()));
                }
            }
        }
        let (origin, sender, event_type, message_id) = (
            origin.to_owned(),
            sender.to_owned(),
            event_type.to_owned(),
            message_id.to_owned(),
        );
        let stored = self
            .db
            .write(move |txn| {
                if !fed_store::record_received_to_device(txn, &origin, &message_id, now_ms())? {
                    return Ok(false);
                }
                let pos = txn.next_pos();
                let mut stored = false;
                for (user, device, message) in &local {
                    // Only users the sender shares a room with (as clients' key sharing and
                    // verification need): a stranger cannot fill anyone's inbox.
                    if !ev_store::share_a_room(txn, &sender, user)? {
                        continue;
                    }
                    for target in device_ids(txn, user)? {
                        if (device == "*" || *device == target)
                            && inbox::pending_from_server(txn, user, &target, &origin)?
                                < MAX_PENDING_FROM_SERVER
                        {
                            inbox::insert(txn, user, &target, pos, &sender, &event_type, message)?;
                            stored = true;
                        }
                    }
                }
                Ok(stored)
            })
            .await?;
        if stored {
            self.notifier.notify();
        }
        Ok(())
    }
}
