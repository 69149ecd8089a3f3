//! End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing keys
//! and signatures, the device-list change stream, and server-side key backup.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

// ------------------------------------------------------------------------- device keys --

/// A device's uploaded identity keys.
#[derive(Debug, Clone)]
pub struct DeviceKeysRow {
    /// Device id.
    pub device_id: String,
    /// The keys as uploaded (without `unsigned`).
    pub json: String,
    /// The device's display name, if set.
    pub display_name: Option<String>,
}

/// The identity keys of one device, if uploaded.
pub fn device_keys(conn: &Connection, user_id: &str, device_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT json FROM device_keys WHERE user_id = ?1 AND device_id = ?2")?
        .query_row(params![user_id, device_id], |r| r.get(0))
        .optional()?)
}

/// Stores (or replaces) the identity keys of a device.
pub fn set_device_keys(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    json: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO device_keys (user_id, device_id, json) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET json = excluded.json",
    )?
    .execute(params![user_id, device_id, json])?;
    Ok(())
}

/// Every device of a user that has uploaded identity keys, with its display name.
pub fn device_keys_of_user(conn: &Connection, user_id: &str) -> Result<Vec<DeviceKeysRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT k.device_id, k.json, d.display_name FROM device_keys k
         JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
         WHERE k.user_id = ?1 ORDER BY k.device_id",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(DeviceKeysRow {
            device_id: r.get(0)?,
            json: r.get(1)?,
            display_name: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// --------------------------------------------------------------------- one-time keys --

/// A stored one-time key, if a key with this id is held for the device.
pub fn one_time_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT json FROM one_time_keys
             WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 AND key_id = ?4",
        )?
        .query_row(params![user_id, device_id, algorithm, key_id], |r| r.get(0))
        .optional()?)
}

/// Adds a one-time key after the ones already held.
pub fn insert_one_time_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    json: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, json)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, device_id, algorithm, key_id, json])?;
    Ok(())
}

/// The number of unclaimed one-time keys of a device, per algorithm.
pub fn one_time_key_counts(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT algorithm, count(*) FROM one_time_keys
         WHERE user_id = ?1 AND device_id = ?2 GROUP BY algorithm",
    )?;
    let rows = stmt.query_map(params![user_id, device_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes and returns the oldest one-time key of `algorithm`: `(key_id, json)`.
pub fn claim_one_time_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<(String, String)>> {
    let found: Option<(i64, String, String)> = conn
        .prepare_cached(
            "SELECT id, key_id, json FROM one_time_keys
             WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 ORDER BY id LIMIT 1",
        )?
        .query_row(params![user_id, device_id, algorithm], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((id, key_id, json)) = found else {
        return Ok(None);
    };
    conn.prepare_cached("DELETE FROM one_time_keys WHERE id = ?1")?
        .execute([id])?;
    Ok(Some((key_id, json)))
}

// --------------------------------------------------------------------- fallback keys --

/// Stores the fallback key of an algorithm, replacing the previous one. Re-uploading the
/// same key keeps its `used` mark.
pub fn set_fallback_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    json: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, json, used)
         VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
            used = CASE WHEN key_id = excluded.key_id AND json = excluded.json THEN used ELSE 0 END,
            key_id = excluded.key_id, json = excluded.json",
    )?
    .execute(params![user_id, device_id, algorithm, key_id, json])?;
    Ok(())
}

/// Returns the fallback key of `algorithm` (`(key_id, json)`) and marks it used.
pub fn claim_fallback_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<(String, String)>> {
    Ok(conn
        .prepare_cached(
            "UPDATE fallback_keys SET used = 1
             WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 RETURNING key_id, json",
        )?
        .query_row(params![user_id, device_id, algorithm], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// The algorithms for which the device has a fallback key that was never claimed.
pub fn unused_fallback_key_types(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT algorithm FROM fallback_keys
         WHERE user_id = ?1 AND device_id = ?2 AND used = 0 ORDER BY algorithm",
    )?;
    let rows = stmt.query_map(params![user_id, device_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------- cross-signing keys --

/// A stored cross-signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossSigningKeyRow {
    /// The unpadded base64 public key.
    pub public_key: String,
    /// The key object as uploaded.
    pub json: String,
}

/// A user's cross-signing key of `usage` (`master`, `self_signing`, `user_signing`).
pub fn cross_signing_key(
    conn: &Connection,
    user_id: &str,
    usage: &str,
) -> Result<Option<CrossSigningKeyRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT public_key, json FROM cross_signing_keys WHERE user_id = ?1 AND usage = ?2",
        )?
        .query_row(params![user_id, usage], |r| {
            Ok(CrossSigningKeyRow {
                public_key: r.get(0)?,
                json: r.get(1)?,
            })
        })
        .optional()?)
}

/// Stores (or replaces) a user's cross-signing key of `usage`.
pub fn set_cross_signing_key(
    conn: &Connection,
    user_id: &str,
    usage: &str,
    public_key: &str,
    json: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO cross_signing_keys (user_id, usage, public_key, json) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, usage) DO UPDATE SET
            public_key = excluded.public_key, json = excluded.json",
    )?
    .execute(params![user_id, usage, public_key, json])?;
    Ok(())
}

/// A signature uploaded through `/keys/signatures/upload`.
#[derive(Debug, Clone)]
pub struct SignatureRow {
    /// Who signed.
    pub signer_user: String,
    /// With which key, e.g. `ed25519:<public key>`.
    pub signer_key_id: String,
    /// The unpadded base64 signature.
    pub signature: String,
}

/// Stores a signature of `target_user`'s key `target_key` (a device id or a public key).
pub fn add_signature(
    conn: &Connection,
    target_user: &str,
    target_key: &str,
    sig: &SignatureRow,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key_id, signature)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (target_user, target_key, signer_user, signer_key_id) DO UPDATE SET
            signature = excluded.signature",
    )?
    .execute(params![
        target_user,
        target_key,
        sig.signer_user,
        sig.signer_key_id,
        sig.signature
    ])?;
    Ok(())
}

/// The uploaded signatures of one key.
pub fn signatures_of(
    conn: &Connection,
    target_user: &str,
    target_key: &str,
) -> Result<Vec<SignatureRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT signer_user, signer_key_id, signature FROM key_signatures
         WHERE target_user = ?1 AND target_key = ?2 ORDER BY signer_user, signer_key_id",
    )?;
    let rows = stmt.query_map(params![target_user, target_key], |r| {
        Ok(SignatureRow {
            signer_user: r.get(0)?,
            signer_key_id: r.get(1)?,
            signature: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forgets the uploaded signatures of one key (a deleted device, a replaced key).
pub fn delete_signatures_of(conn: &Connection, target_user: &str, target_key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM key_signatures WHERE target_user = ?1 AND target_key = ?2")?
        .execute(params![target_user, target_key])?;
    Ok(())
}

/// Forgets the uploaded signatures of a user's keys that no longer exist (deleted devices,
/// replaced cross-signing keys).
pub fn prune_orphan_signatures(conn: &Connection, user_id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM key_signatures WHERE target_user = ?1
           AND target_key NOT IN (SELECT device_id FROM devices WHERE user_id = ?1)
           AND target_key NOT IN (SELECT public_key FROM cross_signing_keys WHERE user_id = ?1)",
    )?
    .execute([user_id])?;
    Ok(())
}

// ------------------------------------------------------------- device-list changes --

/// Records that a user's devices or keys changed at stream position `stream`.
pub fn mark_device_list_changed(conn: &Connection, user_id: &str, stream: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO device_list_changes (user_id, stream) VALUES (?1, ?2)
         ON CONFLICT (user_id) DO UPDATE SET stream = excluded.stream",
    )?
    .execute(params![user_id, stream])?;
    Ok(())
}

/// Users whose devices or keys changed in `(after, upto]`.
pub fn device_lists_changed_between(
    conn: &Connection,
    after: i64,
    upto: i64,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id FROM device_list_changes WHERE stream > ?1 AND stream <= ?2",
    )?;
    let rows = stmt.query_map(params![after, upto], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A membership that changed, in a room where the user of the query has a membership.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    /// The room.
    pub room_id: String,
    /// Whose membership changed.
    pub user_id: String,
    /// The membership it changed to.
    pub membership: String,
}

/// Membership changes in `(after, upto]` in every room where `user_id` has a membership.
pub fn membership_changes_between(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<MembershipChange>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.room_id, c.user_id, c.membership FROM memberships c
         WHERE c.stream > ?2 AND c.stream <= ?3
           AND EXISTS (SELECT 1 FROM memberships me WHERE me.room_id = c.room_id AND me.user_id = ?1)
         ORDER BY c.stream",
    )?;
    let rows = stmt.query_map(params![user_id, after, upto], |r| {
        Ok(MembershipChange {
            room_id: r.get(0)?,
            user_id: r.get(1)?,
            membership: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Users joined to or invited into a room.
pub fn current_members(conn: &Connection, room_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id FROM memberships WHERE room_id = ?1 AND membership IN ('join', 'invite')",
    )?;
    let rows = stmt.query_map([room_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Users who share a room with `user_id` (both joined or invited), the user included if
/// they are in any room.
pub fn users_sharing_a_room(conn: &Connection, user_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT other.user_id FROM memberships me
         JOIN memberships other ON other.room_id = me.room_id
            AND other.membership IN ('join', 'invite')
         WHERE me.user_id = ?1 AND me.membership IN ('join', 'invite')",
    )?;
    let rows = stmt.query_map([user_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ------------------------------------------------------------------------ key backup --

/// A backup version.
#[derive(Debug, Clone)]
pub struct BackupVersionRow {
    /// The version number.
    pub version: i64,
    /// The algorithm, e.g. `m.megolm_backup.v1.curve25519-aes-sha2`.
    pub algorithm: String,
    /// The algorithm's `auth_data`, as JSON.
    pub auth_data: String,
    /// Bumped at every change of the version's keys.
    pub etag: i64,
}

/// Creates the next backup version of a user and returns its number.
pub fn create_backup_version(
    conn: &Connection,
    user_id: &str,
    algorithm: &str,
    auth_data: &str,
) -> Result<i64> {
    let version: i64 = conn
        .prepare_cached(
            "SELECT coalesce(max(version), 0) + 1 FROM backup_versions WHERE user_id = ?1",
        )?
        .query_row([user_id], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO backup_versions (user_id, version, algorithm, auth_data) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user_id, version, algorithm, auth_data])?;
    Ok(version)
}

/// A backup version that was not deleted; the latest one when `version` is `None`.
pub fn backup_version(
    conn: &Connection,
    user_id: &str,
    version: Option<i64>,
) -> Result<Option<BackupVersionRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT version, algorithm, auth_data, etag FROM backup_versions
             WHERE user_id = ?1 AND deleted = 0 AND (?2 IS NULL OR version = ?2)
             ORDER BY version DESC LIMIT 1",
        )?
        .query_row(params![user_id, version], |r| {
            Ok(BackupVersionRow {
                version: r.get(0)?,
                algorithm: r.get(1)?,
                auth_data: r.get(2)?,
                etag: r.get(3)?,
            })
        })
        .optional()?)
}

/// Replaces the `auth_data` of a backup version.
pub fn set_backup_auth_data(
    conn: &Connection,
    user_id: &str,
    version: i64,
    auth_data: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE backup_versions SET auth_data = ?3 WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version, auth_data])?;
    Ok(())
}

/// Deletes a backup version's keys and marks it deleted; false if there was no such version.
pub fn delete_backup_version(conn: &Connection, user_id: &str, version: i64) -> Result<bool> {
    conn.prepare_cached("DELETE FROM backup_keys WHERE user_id = ?1 AND version = ?2")?
        .execute(params![user_id, version])?;
    let n = conn
        .prepare_cached(
            "UPDATE backup_versions SET deleted = 1 WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
        )?
        .execute(params![user_id, version])?;
    Ok(n == 1)
}

/// Bumps a backup version's etag.
pub fn bump_backup_etag(conn: &Connection, user_id: &str, version: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version])?;
    Ok(())
}

/// One backed-up room key.
#[derive(Debug, Clone)]
pub struct BackupKeyRow {
    /// The room.
    pub room_id: String,
    /// The megolm session id.
    pub session_id: String,
    /// Index of the first message the key can decrypt.
    pub first_message_index: i64,
    /// How many times the key was forwarded.
    pub forwarded_count: i64,
    /// Whether the device that backed it up verified its source.
    pub is_verified: bool,
    /// The algorithm-dependent encrypted data, as JSON.
    pub session_data: String,
}

/// Stores (or replaces) a backed-up key.
pub fn put_backup_key(
    conn: &Connection,
    user_id: &str,
    version: i64,
    key: &BackupKeyRow,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index,
                                  forwarded_count, is_verified, session_data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
            first_message_index = excluded.first_message_index,
            forwarded_count = excluded.forwarded_count,
            is_verified = excluded.is_verified,
            session_data = excluded.session_data",
    )?
    .execute(params![
        user_id,
        version,
        key.room_id,
        key.session_id,
        key.first_message_index,
        key.forwarded_count,
        key.is_verified,
        key.session_data
    ])?;
    Ok(())
}

/// Backed-up keys of a version, optionally only of one room and one session.
pub fn backup_keys(
    conn: &Connection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Vec<BackupKeyRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
         FROM backup_keys WHERE user_id = ?1 AND version = ?2
           AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)
         ORDER BY room_id, session_id",
    )?;
    let rows = stmt.query_map(params![user_id, version, room_id, session_id], |r| {
        Ok(BackupKeyRow {
            room_id: r.get(0)?,
            session_id: r.get(1)?,
            first_message_index: r.get(2)?,
            forwarded_count: r.get(3)?,
            is_verified: r.get(4)?,
            session_data: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes backed-up keys of a version (all, one room's, or one session's); returns how many.
pub fn delete_backup_keys(
    conn: &Connection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM backup_keys WHERE user_id = ?1 AND version = ?2
               AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)",
        )?
        .execute(params![user_id, version, room_id, session_id])?)
}

/// The number of keys stored in a backup version.
pub fn count_backup_keys(conn: &Connection, user_id: &str, version: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM backup_keys WHERE user_id = ?1 AND version = ?2")?
        .query_row(params![user_id, version], |r| r.get(0))?)
}
