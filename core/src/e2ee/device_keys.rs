//! Device keys, one-time keys and fallback keys: `/keys/upload`, `/keys/query` and
//! `/keys/claim`, and the reads the same answers are made of for other servers.

use std::collections::{BTreeMap, BTreeSet};

use ruma::UserId;
use serde_json::{Map, Value, json};

use super::{
    E2ee, bad_json,
    cross_signing::{merge_signatures, public_cross_signing_keys},
    invalid, remote, signing, sync,
};
use crate::{error::Result, storage::keys as store};

/// A `/keys/upload` request.
#[derive(Debug, Clone, Default)]
pub struct KeysUpload {
    /// The device's identity keys.
    pub device_keys: Option<Value>,
    /// One-time keys, by `<algorithm>:<key_id>`.
    pub one_time_keys: Map<String, Value>,
    /// Fallback keys, by `<algorithm>:<key_id>`, at most one per algorithm.
    pub fallback_keys: Map<String, Value>,
}

/// Splits a `<algorithm>:<key_id>` key name.
fn split_key_name(name: &str) -> Result<(&str, &str)> {
    match name.split_once(':') {
        Some((alg, id)) if !alg.is_empty() && !id.is_empty() => Ok((alg, id)),
        _ => Err(invalid(format!(
            "Key name {name:?} is not of the form <algorithm>:<key_id>"
        ))),
    }
}

/// Checks the shape of uploaded device keys and that they belong to the caller's device
/// and carry its self-signature. Returns them without `unsigned`, as stored.
fn check_device_keys(keys: &Value, user: &str, device: &str) -> Result<Value> {
    let obj = keys
        .as_object()
        .ok_or_else(|| bad_json("device_keys must be an object"))?;
    let string = |field: &str| {
        obj.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| bad_json(format!("device_keys.{field} must be a string")))
    };
    let (user_id, device_id) = (string("user_id")?, string("device_id")?);
    let algorithms_ok = obj
        .get("algorithms")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().all(Value::is_string));
    if !algorithms_ok {
        return Err(bad_json("device_keys.algorithms must be a list of strings"));
    }
    let key_map = obj
        .get("keys")
        .and_then(Value::as_object)
        .filter(|k| k.values().all(Value::is_string))
        .ok_or_else(|| bad_json("device_keys.keys must map key ids to strings"))?;
    if !obj.get("signatures").is_some_and(Value::is_object) {
        return Err(bad_json("device_keys.signatures must be an object"));
    }
    if user_id != user || device_id != device {
        return Err(invalid(
            "device_keys.user_id and device_id must be those of the uploading device",
        ));
    }
    let ed25519 = key_map
        .get(&format!("ed25519:{device}"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("device_keys.keys must hold the device's ed25519 key"))?;
    signing::verify_signed_by(keys, user, device, ed25519)
        .map_err(|e| invalid(format!("device_keys are not signed by the device: {e}")))?;
    let mut stored = keys.clone();
    if let Some(map) = stored.as_object_mut() {
        map.remove("unsigned");
    }
    Ok(stored)
}

/// Claims one key per requested device of `user` (device id → algorithm): the oldest
/// one-time key, or the fallback key when none is left. Devices without a key are left out.
pub(crate) fn claim_for_user(
    conn: &rusqlite::Connection,
    user: &str,
    devices: &BTreeMap<String, String>,
) -> Result<Map<String, Value>> {
    let mut per_device = Map::new();
    for (device, alg) in devices {
        let key = match store::claim_one_time_key(conn, user, device, alg)? {
            Some(k) => Some(k),
            None => store::claim_fallback_key(conn, user, device, alg)?,
        };
        if let Some((id, json)) = key {
            per_device.insert(
                device.clone(),
                json!({ format!("{alg}:{id}"): serde_json::from_str::<Value>(&json)? }),
            );
        }
    }
    Ok(per_device)
}

/// The public keys of one local user that a viewer may see.
pub(crate) struct UserKeys {
    /// Device keys by device id, with `unsigned.device_display_name`.
    pub devices: Map<String, Value>,
    /// The master key, with the signatures the viewer may see.
    pub master_key: Option<Value>,
    /// The self-signing key.
    pub self_signing_key: Option<Value>,
}

/// Reads the keys of `user`'s `devices` (all devices when empty) as `viewer` may see them
/// (`None`: another server, which sees the owner's signatures only).
pub(crate) fn user_keys(
    conn: &rusqlite::Connection,
    user: &str,
    devices: &[String],
    viewer: Option<&str>,
) -> Result<UserKeys> {
    let mut found = Map::new();
    for row in store::device_keys_of_user(conn, user)? {
        if !devices.is_empty() && !devices.contains(&row.device_id) {
            continue;
        }
        let mut keys: Value = serde_json::from_str(&row.json)?;
        let sigs = store::signatures_of(conn, user, &row.device_id)?;
        merge_signatures(&mut keys, user, viewer, sigs);
        if let Some(name) = row.display_name {
            keys["unsigned"] = json!({ "device_display_name": name });
        }
        found.insert(row.device_id, keys);
    }
    let (master_key, self_signing_key) = public_cross_signing_keys(conn, user, viewer)?;
    Ok(UserKeys {
        devices: found,
        master_key,
        self_signing_key,
    })
}

impl E2ee {
    /// `/keys/upload`: stores device keys, one-time keys and fallback keys of the caller's
    /// device; returns the unclaimed one-time key counts per algorithm.
    pub async fn upload_keys(
        &self,
        user: &UserId,
        device: &str,
        upload: KeysUpload,
    ) -> Result<BTreeMap<String, i64>> {
        let (user, device) = (user.to_string(), device.to_owned());
        let device_keys = upload
            .device_keys
            .as_ref()
            .map(|k| check_device_keys(k, &user, &device))
            .transpose()?
            .map(|k| serde_json::to_string(&k))
            .transpose()?;
        let mut one_time = Vec::new();
        for (name, key) in &upload.one_time_keys {
            let (alg, id) = split_key_name(name)?;
            if !(key.is_string() || key.is_object()) {
                return Err(bad_json(format!(
                    "one-time key {name} must be a string or an object"
                )));
            }
            one_time.push((
                alg.to_owned(),
                id.to_owned(),
                key.clone(),
                serde_json::to_string(key)?,
            ));
        }
        let mut fallback: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (name, key) in &upload.fallback_keys {
            let (alg, id) = split_key_name(name)?;
            if !(key.is_string() || key.is_object()) {
                return Err(bad_json(format!(
                    "fallback key {name} must be a string or an object"
                )));
            }
            let json = serde_json::to_string(key)?;
            if fallback
                .insert(alg.to_owned(), (id.to_owned(), json))
                .is_some()
            {
                return Err(invalid(format!(
                    "Only one fallback key per algorithm ({alg})"
                )));
            }
        }
        let (counts, changed) = self
            .db
            .write(move |txn| {
                let mut changed = false;
                if let Some(json) = &device_keys {
                    let old = store::device_keys(txn, &user, &device)?;
                    if old.as_deref() != Some(json.as_str()) {
                        store::set_device_keys(txn, &user, &device, json)?;
                        if old.is_some() {
                            // Signatures of the old keys do not cover the new ones.
                            store::delete_signatures_of(txn, &user, &device)?;
                        }
                        let pos = txn.next_pos();
                        store::mark_device_list_changed(txn, &user, pos)?;
                        remote::announce_devices(txn, &user, std::slice::from_ref(&device))?;
                        changed = true;
                    }
                }
                for (alg, id, key, json) in &one_time {
                    match store::one_time_key(txn, &user, &device, alg, id)? {
                        Some(old) if serde_json::from_str::<Value>(&old)? == *key => {}
                        Some(_) => {
                            return Err(invalid(format!(
                                "One-time key {alg}:{id} already exists with different content"
                            )));
                        }
                        None => store::insert_one_time_key(txn, &user, &device, alg, id, json)?,
                    }
                }
                for (alg, (id, json)) in &fallback {
                    store::set_fallback_key(txn, &user, &device, alg, id, json)?;
                }
                let mut counts: BTreeMap<String, i64> =
                    store::one_time_key_counts(txn, &user, &device)?
                        .into_iter()
                        .collect();
                counts
                    .entry(sync::SIGNED_CURVE25519.to_owned())
                    .or_insert(0);
                Ok((counts, changed))
            })
            .await?;
        if changed {
            self.notifier.notify();
        }
        Ok(counts)
    }

    /// `/keys/query`: the device keys and cross-signing keys of the requested users (all
    /// their devices when the list is empty). Only the caller and users who share a room
    /// with them are answered; anyone else reads as a user without keys.
    pub async fn query_keys(
        &self,
        caller: &UserId,
        requested: BTreeMap<String, Vec<String>>,
    ) -> Result<Value> {
        let caller = caller.to_string();
        let local: BTreeSet<String> = requested
            .keys()
            .filter(|u| self.is_local(u))
            .cloned()
            .collect();
        self.db
            .read(move |conn| {
                let visible: BTreeSet<String> = store::users_sharing_a_room(conn, &caller)?
                    .into_iter()
                    .collect();
                let mut device_keys = Map::new();
                let mut master_keys = Map::new();
                let mut self_signing_keys = Map::new();
                let mut user_signing_keys = Map::new();
                for (user, devices) in &requested {
                    let allowed =
                        local.contains(user) && (*user == caller || visible.contains(user));
                    if !allowed {
                        device_keys.insert(user.clone(), json!({}));
                        continue;
                    }
                    let keys = user_keys(conn, user, devices, Some(&caller))?;
                    device_keys.insert(user.clone(), Value::Object(keys.devices));
                    if let Some(master) = keys.master_key {
                        master_keys.insert(user.clone(), master);
                    }
                    if let Some(ssk) = keys.self_signing_key {
                        self_signing_keys.insert(user.clone(), ssk);
                    }
                    if *user == caller
                        && let Some(usk) = store::cross_signing_key(conn, user, "user_signing")?
                    {
                        user_signing_keys.insert(user.clone(), serde_json::from_str(&usk.json)?);
                    }
                }
                Ok(json!({
                    "device_keys": device_keys,
                    "master_keys": master_keys,
                    "self_signing_keys": self_signing_keys,
                    "user_signing_keys": user_signing_keys,
                    "failures": {},
                }))
            })
            .await
    }

    /// `/keys/claim`: takes one one-time key per requested device (the oldest uploaded), or
    /// the device's fallback key when none is left, which is then marked used. Devices
    /// without a key are left out, and users none of whose devices had one.
    pub async fn claim_keys(
        &self,
        caller: &UserId,
        requested: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Value> {
        let caller = caller.to_string();
        let local: BTreeSet<String> = requested
            .keys()
            .filter(|u| self.is_local(u))
            .cloned()
            .collect();
        self.db
            .write(move |txn| {
                let visible: BTreeSet<String> = store::users_sharing_a_room(txn, &caller)?
                    .into_iter()
                    .collect();
                let mut claimed = Map::new();
                for (user, devices) in &requested {
                    if !local.contains(user) || (*user != caller && !visible.contains(user)) {
                        continue;
                    }
                    let per_device = claim_for_user(txn, user, devices)?;
                    if !per_device.is_empty() {
                        claimed.insert(user.clone(), Value::Object(per_device));
                    }
                }
                Ok(json!({ "one_time_keys": claimed, "failures": {} }))
            })
            .await
    }
}
