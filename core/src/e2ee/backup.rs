//! Server-side key backup (`/room_keys`): versions with their `auth_data`, and encrypted room
//! keys the server stores without being able to read them.

use axum::http::StatusCode;
use ruma::UserId;
use serde_json::{Map, Value, json};

use super::E2ee;
use crate::{
    error::{Error, ErrorCode, MatrixError, Result},
    storage::keys::{self as store, BackupKeyRow},
};

/// Which keys of a backup version a request is about.
#[derive(Debug, Clone, Default)]
pub struct KeyScope {
    /// One room only.
    pub room_id: Option<String>,
    /// One session of that room only.
    pub session_id: Option<String>,
}

/// A room key to back up: `(room_id, session_id, KeyBackupData)`.
pub type BackupKey = (String, String, Value);

fn unknown_version() -> Error {
    MatrixError::not_found("Unknown backup version").into()
}

/// Parses a version path or query parameter; anything not a version number is unknown.
fn parse_version(version: &str) -> Result<i64> {
    version
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(unknown_version)
}

/// Checks a `KeyBackupData` object and reads it into a row.
fn parse_key(room_id: String, session_id: String, data: &Value) -> Result<BackupKeyRow> {
    let bad =
        |field: &str| Error::from(MatrixError::bad_json(format!("Invalid key data: {field}")));
    let int = |field: &str| {
        data.get(field)
            .and_then(Value::as_i64)
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(field))
    };
    let session_data = data
        .get("session_data")
        .filter(|s| s.is_object())
        .ok_or_else(|| bad("session_data"))?;
    Ok(BackupKeyRow {
        room_id,
        session_id,
        first_message_index: int("first_message_index")?,
        forwarded_count: int("forwarded_count")?,
        is_verified: data
            .get("is_verified")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("is_verified"))?,
        session_data: serde_json::to_string(session_data)?,
    })
}

/// Whether `new` should replace `old`: a verified key beats an unverified one, then the key
/// that decrypts more (lower first message index), then the one forwarded fewer times.
fn better(new: &BackupKeyRow, old: &BackupKeyRow) -> bool {
    if new.is_verified != old.is_verified {
        return new.is_verified;
    }
    if new.first_message_index != old.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

fn key_json(row: &BackupKeyRow) -> Result<Value> {
    Ok(json!({
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified,
        "session_data": serde_json::from_str::<Value>(&row.session_data)?,
    }))
}

impl E2ee {
    /// Creates a new backup version; returns its number.
    pub async fn create_backup_version(
        &self,
        user: &UserId,
        algorithm: &str,
        auth_data: &Value,
    ) -> Result<String> {
        let (user, algorithm, auth_data) = (
            user.to_string(),
            algorithm.to_owned(),
            serde_json::to_string(auth_data)?,
        );
        let version = self
            .db
            .write(move |txn| store::create_backup_version(txn, &user, &algorithm, &auth_data))
            .await?;
        Ok(version.to_string())
    }

    /// A backup version (the latest when `version` is `None`) with its key count and etag;
    /// `404 M_NOT_FOUND` if there is none.
    pub async fn backup_version(&self, user: &UserId, version: Option<&str>) -> Result<Value> {
        let version = version.map(parse_version).transpose()?;
        let user = user.to_string();
        self.db
            .read(move |conn| {
                let row =
                    store::backup_version(conn, &user, version)?.ok_or_else(unknown_version)?;
                let count = store::count_backup_keys(conn, &user, row.version)?;
                Ok(json!({
                    "algorithm": row.algorithm,
                    "auth_data": serde_json::from_str::<Value>(&row.auth_data)?,
                    "count": count,
                    "etag": row.etag.to_string(),
                    "version": row.version.to_string(),
                }))
            })
            .await
    }

    /// Replaces a backup version's `auth_data`. The algorithm cannot change.
    pub async fn update_backup_version(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: &Value,
    ) -> Result<()> {
        let version = parse_version(version)?;
        let (user, algorithm, auth_data) = (
            user.to_string(),
            algorithm.to_owned(),
            serde_json::to_string(auth_data)?,
        );
        self.db
            .write(move |txn| {
                let row = store::backup_version(txn, &user, Some(version))?
                    .ok_or_else(unknown_version)?;
                if row.algorithm != algorithm {
                    return Err(MatrixError::invalid_param(
                        "The algorithm of a backup version cannot change",
                    )
                    .into());
                }
                store::set_backup_auth_data(txn, &user, version, &auth_data)
            })
            .await
    }

    /// Deletes a backup version and its keys.
    pub async fn delete_backup_version(&self, user: &UserId, version: &str) -> Result<()> {
        let version = parse_version(version)?;
        let user = user.to_string();
        let deleted = self
            .db
            .write(move |txn| store::delete_backup_version(txn, &user, version))
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(unknown_version())
        }
    }

    /// Stores room keys in the current backup version, keeping a stored key when it is
    /// better than the new one. Returns `(count, etag)` of the version afterwards.
    pub async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: Vec<BackupKey>,
    ) -> Result<(i64, String)> {
        let version = parse_version(version)?;
        let rows = keys
            .into_iter()
            .map(|(room, session, data)| parse_key(room, session, &data))
            .collect::<Result<Vec<_>>>()?;
        let user = user.to_string();
        self.db
            .write(move |txn| {
                let current = store::backup_version(txn, &user, None)?;
                match current {
                    Some(c) if c.version == version => {}
                    Some(c) => {
                        if store::backup_version(txn, &user, Some(version))?.is_none() {
                            return Err(unknown_version());
                        }
                        return Err(MatrixError::new(
                            StatusCode::FORBIDDEN,
                            ErrorCode::WrongRoomKeysVersion,
                            "Keys can only be added to the current backup version",
                        )
                        .with_field("current_version", json!(c.version.to_string()))
                        .into());
                    }
                    None => return Err(unknown_version()),
                }
                let mut changed = false;
                for row in &rows {
                    let old = store::backup_keys(
                        txn,
                        &user,
                        version,
                        Some(&row.room_id),
                        Some(&row.session_id),
                    )?;
                    if old.first().is_none_or(|o| better(row, o)) {
                        store::put_backup_key(txn, &user, version, row)?;
                        changed = true;
                    }
                }
                if changed {
                    store::bump_backup_etag(txn, &user, version)?;
                }
                version_summary(txn, &user, version)
            })
            .await
    }

    /// Backed-up keys of a version in `scope`: `{rooms: …}` for all, `{sessions: …}` for a
    /// room, the key itself for a session (`404 M_NOT_FOUND` if absent).
    pub async fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: KeyScope,
    ) -> Result<Value> {
        let version = parse_version(version)?;
        let user = user.to_string();
        self.db
            .read(move |conn| {
                store::backup_version(conn, &user, Some(version))?.ok_or_else(unknown_version)?;
                let rows = store::backup_keys(
                    conn,
                    &user,
                    version,
                    scope.room_id.as_deref(),
                    scope.session_id.as_deref(),
                )?;
                if scope.session_id.is_some() {
                    return match rows.first() {
                        Some(row) => key_json(row),
                        None => Err(MatrixError::not_found("No room key found").into()),
                    };
                }
                let mut rooms: Map<String, Value> = Map::new();
                for row in &rows {
                    let room = rooms
                        .entry(row.room_id.clone())
                        .or_insert_with(|| json!({ "sessions": {} }));
                    room["sessions"][row.session_id.as_str()] = key_json(row)?;
                }
                Ok(match scope.room_id {
                    Some(room) => rooms
                        .remove(&room)
                        .unwrap_or_else(|| json!({ "sessions": {} })),
                    None => json!({ "rooms": rooms }),
                })
            })
            .await
    }

    /// Deletes backed-up keys of a version in `scope`. Returns `(count, etag)` afterwards.
    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: KeyScope,
    ) -> Result<(i64, String)> {
        let version = parse_version(version)?;
        let user = user.to_string();
        self.db
            .write(move |txn| {
                store::backup_version(txn, &user, Some(version))?.ok_or_else(unknown_version)?;
                let n = store::delete_backup_keys(
                    txn,
                    &user,
                    version,
                    scope.room_id.as_deref(),
                    scope.session_id.as_deref(),
                )?;
                if n > 0 {
                    store::bump_backup_etag(txn, &user, version)?;
                }
                version_summary(txn, &user, version)
            })
            .await
    }
}

/// `(count, etag)` of a backup version.
fn version_summary(conn: &rusqlite::Connection, user: &str, version: i64) -> Result<(i64, String)> {
    let row = store::backup_version(conn, user, Some(version))?.ok_or_else(unknown_version)?;
    let count = store::count_backup_keys(conn, user, version)?;
    Ok((count, row.etag.to_string()))
}
