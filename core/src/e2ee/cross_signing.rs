//! Cross-signing: `/keys/device_signing/upload` (a user's master, self-signing and
//! user-signing keys) and `/keys/signatures/upload` (signatures of devices and master keys
//! made with them), and the signatures a viewer may see on the keys they read.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use ruma::UserId;
use serde_json::{Map, Value, json};

use super::{E2ee, invalid, remote, signing};
use crate::{
    error::{Error, ErrorCode, MatrixError, Result},
    storage::keys as store,
};

/// Cross-signing key usages, in the order they are checked.
const USAGES: [&str; 3] = ["master", "self_signing", "user_signing"];

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

fn invalid_signature(message: impl Into<String>) -> MatrixError {
    MatrixError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidSignature,
        message,
    )
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
pub(super) fn merge_signatures(
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

impl E2ee {
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
