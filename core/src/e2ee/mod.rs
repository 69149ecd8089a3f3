//! End-to-end encryption support: the server holds public keys and opaque blobs for clients.
//!
//! - device keys, one-time and fallback keys: upload, query, claim ([`E2ee::upload_keys`],
//!   [`E2ee::query_keys`], [`E2ee::claim_keys`]);
//! - cross-signing keys and signatures ([`E2ee::upload_cross_signing_keys`],
//!   [`E2ee::upload_signatures`]);
//! - the device-list change stream ([`E2ee::key_changes`], and `/sync` through [`sync`]);
//! - to-device messages ([`to_device`]) and server-side key backup ([`backup`]);
//! - the same across servers: keys served to other servers, device-list changes announced
//!   to them, their users' device lists cached, their to-device messages received
//!   ([`remote`]; the requests themselves are made by [`crate::federation::devices`]).
//!
//! Keys are checked where the server can check them: device keys must carry a valid
//! self-signature, cross-signing keys a valid signature by the master key, and uploaded
//! signatures must verify against the keys they sign.

pub mod backup;
pub mod remote;
pub mod signing;
pub mod sync;
pub mod to_device;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use axum::http::StatusCode;
use ruma::{OwnedServerName, UserId};
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, ErrorCode, MatrixError, Result},
    notifier::Notifier,
    storage::{Db, keys as store},
};

/// Cross-signing key usages, in the order they are checked.
const USAGES: [&str; 3] = ["master", "self_signing", "user_signing"];

/// The end-to-end encryption service.
#[derive(Clone)]
pub struct E2ee {
    db: Db,
    notifier: Arc<Notifier>,
    server_name: OwnedServerName,
}

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

/// A `/keys/device_signing/upload` request (without its `auth`).
#[derive(Debug, Clone, Default)]
pub struct CrossSigningUpload {
    /// The master key.
    pub master_key: Option<Value>,
    /// The self-signing key, signed by the master key.
    pub self_signing_key: Option<Value>,
    /// The user-signing key, signed by the master key.
    pub user_signing_key: Option<Value>,
}

/// What became of a cross-signing upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSigningOutcome {
    /// The keys are stored (or were stored already).
    Stored,
    /// The upload replaces existing keys: the user must authenticate first.
    NeedsAuth,
}

fn invalid(message: impl Into<String>) -> Error {
    MatrixError::invalid_param(message).into()
}

fn bad_json(message: impl Into<String>) -> Error {
    MatrixError::bad_json(message).into()
}

fn invalid_signature(message: impl Into<String>) -> MatrixError {
    MatrixError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidSignature,
        message,
    )
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

/// Checks the shape of an uploaded cross-signing key of `usage`; returns its public key.
fn check_cross_signing_key(key: &Value, user: &str, usage: &str) -> Result<String> {
    let obj = key
        .as_object()
        .ok_or_else(|| invalid(format!("{usage} key must be an object")))?;
    if obj.get("user_id").and_then(Value::as_str) != Some(user) {
        return Err(invalid(format!(
            "{usage} key must belong to the uploading user"
        )));
    }
    let has_usage = obj
        .get("usage")
        .and_then(Value::as_array)
        .is_some_and(|u| u.iter().any(|v| v.as_str() == Some(usage)));
    if !has_usage {
        return Err(invalid(format!("{usage} key must list {usage:?} in usage")));
    }
    let keys = obj
        .get("keys")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(format!("{usage} key must have keys")))?;
    let [(key_id, public)] = keys.iter().collect::<Vec<_>>()[..] else {
        return Err(invalid(format!("{usage} key must hold exactly one key")));
    };
    let public = public
        .as_str()
        .ok_or_else(|| invalid(format!("{usage} key must be a string")))?;
    if key_id.strip_prefix("ed25519:") != Some(public)
        || signing::decode_base64(public).is_none_or(|b| b.len() != 32)
    {
        return Err(invalid(format!(
            "{usage} key must be an ed25519 key named ed25519:<public key>"
        )));
    }
    Ok(public.to_owned())
}

/// Adds uploaded signatures to a key object, keeping those `viewer` may see: signatures by
/// the key's owner, and those by `viewer` themselves (`None` for another server).
fn merge_signatures(
    obj: &mut Value,
    owner: &str,
    viewer: Option<&str>,
    signatures: Vec<store::SignatureRow>,
) {
    for sig in signatures {
        if sig.signer_user != owner && Some(sig.signer_user.as_str()) != viewer {
            continue;
        }
        if !obj["signatures"].is_object() {
            obj["signatures"] = json!({});
        }
        if !obj["signatures"][&sig.signer_user].is_object() {
            obj["signatures"][&sig.signer_user] = json!({});
        }
        obj["signatures"][&sig.signer_user][&sig.signer_key_id] = json!(sig.signature);
    }
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

/// The master key (with the signatures `viewer` may see) and self-signing key of `user`.
pub(crate) fn public_cross_signing_keys(
    conn: &rusqlite::Connection,
    user: &str,
    viewer: Option<&str>,
) -> Result<(Option<Value>, Option<Value>)> {
    let master_key = match store::cross_signing_key(conn, user, "master")? {
        Some(master) => {
            let mut key: Value = serde_json::from_str(&master.json)?;
            let sigs = store::signatures_of(conn, user, &master.public_key)?;
            merge_signatures(&mut key, user, viewer, sigs);
            Some(key)
        }
        None => None,
    };
    let self_signing_key = store::cross_signing_key(conn, user, "self_signing")?
        .map(|k| serde_json::from_str(&k.json))
        .transpose()?;
    Ok((master_key, self_signing_key))
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
    /// Creates the service.
    pub fn new(db: Db, notifier: Arc<Notifier>, server_name: OwnedServerName) -> Self {
        Self {
            db,
            notifier,
            server_name,
        }
    }

    fn is_local(&self, user: &str) -> bool {
        UserId::parse(user).is_ok_and(|u| u.server_name() == self.server_name)
    }

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

    /// `/keys/changes`: users whose device lists changed between two sync positions, and
    /// users who no longer share a room with the caller: `(changed, left)`.
    pub async fn key_changes(
        &self,
        caller: &UserId,
        from: i64,
        to: i64,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let caller = caller.to_string();
        self.db
            .read(move |conn| sync::device_list_delta(conn, &caller, from, to))
            .await
    }

    /// `/keys/device_signing/upload`: stores the user's cross-signing keys. Replacing keys
    /// already stored needs `authenticated` (user-interactive auth done by the caller);
    /// without it nothing is stored and [`CrossSigningOutcome::NeedsAuth`] is returned.
    pub async fn upload_cross_signing_keys(
        &self,
        user: &UserId,
        upload: CrossSigningUpload,
        authenticated: bool,
    ) -> Result<CrossSigningOutcome> {
        let user = user.to_string();
        let provided: Vec<(&'static str, Value)> = USAGES
            .iter()
            .zip([
                upload.master_key,
                upload.self_signing_key,
                upload.user_signing_key,
            ])
            .filter_map(|(usage, key)| key.map(|k| (*usage, k)))
            .collect();
        let mut checked = Vec::new();
        for (usage, key) in &provided {
            let public = check_cross_signing_key(key, &user, usage)?;
            checked.push((*usage, public, key.clone()));
        }
        let outcome = self
            .db
            .write(move |txn| {
                let stored_master = store::cross_signing_key(txn, &user, "master")?;
                let master = match checked.iter().find(|(u, ..)| *u == "master") {
                    Some((_, public, _)) => Some(public.clone()),
                    None => stored_master.as_ref().map(|m| m.public_key.clone()),
                };
                let mut to_store = Vec::new();
                for (usage, public, key) in &checked {
                    if *usage != "master" {
                        let master = master.as_deref().ok_or_else(|| {
                            MatrixError::missing_param("No master key is available")
                        })?;
                        signing::verify_signed_by(key, &user, master, master).map_err(|e| {
                            invalid_signature(format!(
                                "{usage} key is not signed by the master key: {e}"
                            ))
                        })?;
                    }
                    let json = serde_json::to_string(key)?;
                    let old = store::cross_signing_key(txn, &user, usage)?;
                    if old.as_ref().is_none_or(|o| o.json != json) {
                        to_store.push((*usage, public.clone(), json, old));
                    }
                }
                if to_store.is_empty() {
                    return Ok(CrossSigningOutcome::Stored);
                }
                if stored_master.is_some() && !authenticated {
                    return Ok(CrossSigningOutcome::NeedsAuth);
                }
                for (usage, public, json, old) in &to_store {
                    if let Some(old) = old {
                        store::delete_signatures_of(txn, &user, &old.public_key)?;
                    }
                    store::set_cross_signing_key(txn, &user, usage, public, json)?;
                }
                let pos = txn.next_pos();
                store::mark_device_list_changed(txn, &user, pos)?;
                if to_store.iter().any(|(usage, ..)| *usage != "user_signing") {
                    remote::announce_signing_keys(txn, &user)?;
                }
                Ok(CrossSigningOutcome::Stored)
            })
            .await?;
        if outcome == CrossSigningOutcome::Stored {
            self.notifier.notify();
        }
        Ok(outcome)
    }

    /// `/keys/signatures/upload`: stores signatures of the caller's own devices (by their
    /// self-signing key), of their own master key (by one of their devices), and of other
    /// users' master keys (by their user-signing key). Each signature must verify against
    /// the stored key it signs. Returns the `failures` map.
    pub async fn upload_signatures(
        &self,
        caller: &UserId,
        signed: BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<Value> {
        let caller = caller.to_string();
        let (failures, stored) = self
            .db
            .write(move |txn| {
                let mut failures = Map::new();
                let mut stored = false;
                let mut own_keys = Vec::new();
                for (target_user, keys) in &signed {
                    for (key_id, object) in keys {
                        match store_signature(txn, &caller, target_user, key_id, object) {
                            Ok(()) => {
                                stored = true;
                                if *target_user == caller {
                                    own_keys.push(key_id.clone());
                                }
                            }
                            Err(Error::Matrix(e)) => {
                                let entry = failures
                                    .entry(target_user.clone())
                                    .or_insert_with(|| json!({}));
                                entry[key_id.as_str()] =
                                    json!({ "errcode": e.errcode, "error": e.message });
                            }
                            Err(other) => return Err(other),
                        }
                    }
                }
                if stored {
                    let pos = txn.next_pos();
                    store::mark_device_list_changed(txn, &caller, pos)?;
                    for target in signed.keys().filter(|t| **t != caller) {
                        store::mark_device_list_changed(txn, target, pos)?;
                    }
                    // Other servers learn of new signatures of the caller's own keys.
                    let master =
                        store::cross_signing_key(txn, &caller, "master")?.map(|m| m.public_key);
                    let (masters, devices): (Vec<String>, Vec<String>) = own_keys
                        .into_iter()
                        .partition(|k| Some(k) == master.as_ref());
                    remote::announce_devices(txn, &caller, &devices)?;
                    if !masters.is_empty() {
                        remote::announce_signing_keys(txn, &caller)?;
                    }
                }
                Ok((failures, stored))
            })
            .await?;
        if stored {
            self.notifier.notify();
        }
        Ok(json!({ "failures": failures }))
    }
}

/// Checks and stores the signatures `caller` made on one key of `target_user`.
fn store_signature(
    conn: &rusqlite::Connection,
    caller: &str,
    target_user: &str,
    key_id: &str,
    object: &Value,
) -> Result<()> {
    let not_found = || Error::from(MatrixError::not_found(format!("Unknown key {key_id}")));
    let their_sigs = object
        .get("signatures")
        .and_then(|s| s.get(caller))
        .and_then(Value::as_object)
        .ok_or_else(|| invalid_signature(format!("No signature by {caller}")))?;
    let master = match store::cross_signing_key(conn, target_user, "master")? {
        Some(m) => Some(m),
        // A user of another server: their master key as their server last sent it.
        None if target_user != caller => remote::cached_master_key(conn, target_user)?,
        None => None,
    };
    let mut added = 0;
    if target_user == caller {
        if let Some(master) = master.filter(|m| m.public_key == key_id) {
            // The user's own master key, signed by one of their devices.
            let master_obj: Value = serde_json::from_str(&master.json)?;
            for (sig_key_id, sig) in their_sigs {
                let (Some(device), Some(sig)) = (sig_key_id.strip_prefix("ed25519:"), sig.as_str())
                else {
                    continue;
                };
                if device == master.public_key {
                    continue;
                }
                let Some(dev_keys) = store::device_keys(conn, caller, device)? else {
                    continue;
                };
                let dev_keys: Value = serde_json::from_str(&dev_keys)?;
                let Some(ed) = dev_keys["keys"][sig_key_id.as_str()].as_str() else {
                    continue;
                };
                signing::verify_signature(&master_obj, sig, ed)
                    .map_err(|e| invalid_signature(format!("{sig_key_id}: {e}")))?;
                store::add_signature(
                    conn,
                    caller,
                    key_id,
                    &store::SignatureRow {
                        signer_user: caller.to_owned(),
                        signer_key_id: sig_key_id.clone(),
                        signature: sig.to_owned(),
                    },
                )?;
                added += 1;
            }
        } else {
            // One of the user's devices, signed by their self-signing key.
            let dev_keys = store::device_keys(conn, caller, key_id)?.ok_or_else(not_found)?;
            let dev_keys: Value = serde_json::from_str(&dev_keys)?;
            record_cross_signature(
                conn,
                caller,
                caller,
                key_id,
                &dev_keys,
                their_sigs,
                "self_signing",
            )?;
            added += 1;
        }
    } else {
        // Another user's master key, signed by the caller's user-signing key.
        let master = master
            .filter(|m| m.public_key == key_id)
            .ok_or_else(not_found)?;
        let master_obj: Value = serde_json::from_str(&master.json)?;
        record_cross_signature(
            conn,
            caller,
            target_user,
            key_id,
            &master_obj,
            their_sigs,
            "user_signing",
        )?;
        added += 1;
    }
    if added == 0 {
        return Err(invalid_signature("No usable signature").into());
    }
    Ok(())
}

/// Checks `caller`'s signature of `signed` (the key `key_id` of `target_user`) made with the
/// caller's cross-signing key of `kind` (`self_signing` or `user_signing`), and stores it.
fn record_cross_signature(
    conn: &rusqlite::Connection,
    caller: &str,
    target_user: &str,
    key_id: &str,
    signed: &Value,
    their_sigs: &serde_json::Map<String, Value>,
    kind: &str,
) -> Result<()> {
    let name = kind.replace('_', "-");
    let signer = store::cross_signing_key(conn, caller, kind)?
        .ok_or_else(|| MatrixError::missing_param(format!("No {name} key is available")))?;
    let sig_key_id = format!("ed25519:{}", signer.public_key);
    let sig = their_sigs
        .get(&sig_key_id)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_signature(format!("No signature by the {name} key")))?;
    signing::verify_signature(signed, sig, &signer.public_key)
        .map_err(|e| invalid_signature(format!("{sig_key_id}: {e}")))?;
    store::add_signature(
        conn,
        target_user,
        key_id,
        &store::SignatureRow {
            signer_user: caller.to_owned(),
            signer_key_id: sig_key_id,
            signature: sig.to_owned(),
        },
    )?;
    Ok(())
}
