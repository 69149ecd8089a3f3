//! Users, devices and access tokens.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// A stored user.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Full user id.
    pub user_id: String,
    /// Argon2 PHC string, if the user has a password.
    pub password_hash: Option<String>,
    /// Whether the account is deactivated.
    pub deactivated: bool,
}

/// A stored device.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// Device id.
    pub device_id: String,
    /// Display name, if set.
    pub display_name: Option<String>,
    /// Last time a request was made with one of its tokens.
    pub last_seen_ts: Option<i64>,
}

/// Who an access token belongs to.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    /// Full user id.
    pub user_id: String,
    /// The device the token was issued to.
    pub device_id: String,
}

/// Inserts a user; returns false if the localpart is taken.
pub fn insert_user(
    conn: &Connection,
    user_id: &str,
    localpart: &str,
    password_hash: Option<&str>,
    now: i64,
) -> Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO users (user_id, localpart, password_hash, displayname, created_ts)
         VALUES (?1, ?2, ?3, ?2, ?4)",
        params![user_id, localpart, password_hash, now],
    )?;
    Ok(n == 1)
}

/// Looks up a user by full id.
pub fn get_user(conn: &Connection, user_id: &str) -> Result<Option<UserRow>> {
    Ok(conn
        .prepare_cached("SELECT user_id, password_hash, deactivated FROM users WHERE user_id = ?1")?
        .query_row([user_id], |r| {
            Ok(UserRow {
                user_id: r.get(0)?,
                password_hash: r.get(1)?,
                deactivated: r.get(2)?,
            })
        })
        .optional()?)
}

/// Whether a localpart is taken.
pub fn localpart_exists(conn: &Connection, localpart: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE localpart = ?1")?
        .exists([localpart])?)
}

/// Replaces a user's password hash.
pub fn set_password_hash(conn: &Connection, user_id: &str, hash: &str) -> Result<()> {
    conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
        params![user_id, hash],
    )?;
    Ok(())
}

/// Creates the device if missing, or updates its display name when one is given.
pub fn upsert_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET
            display_name = coalesce(excluded.display_name, display_name),
            last_seen_ts = excluded.last_seen_ts",
        params![user_id, device_id, display_name, now],
    )?;
    Ok(())
}

/// Lists a user's devices.
pub fn list_devices(conn: &Connection, user_id: &str) -> Result<Vec<DeviceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, display_name, last_seen_ts FROM devices WHERE user_id = ?1 ORDER BY device_id",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(DeviceRow {
            device_id: r.get(0)?,
            display_name: r.get(1)?,
            last_seen_ts: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a new access token (by its digest).
pub fn insert_token(
    conn: &Connection,
    token_hash: &[u8],
    user_id: &str,
    device_id: &str,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash, user_id, device_id, now],
    )?;
    Ok(())
}

/// Finds the owner of a token digest.
pub fn token_owner(conn: &Connection, token_hash: &[u8]) -> Result<Option<TokenOwner>> {
    Ok(conn
        .prepare_cached("SELECT user_id, device_id FROM access_tokens WHERE token_hash = ?1")?
        .query_row([token_hash], |r| {
            Ok(TokenOwner {
                user_id: r.get(0)?,
                device_id: r.get(1)?,
            })
        })
        .optional()?)
}

/// Deletes a device together with its tokens.
pub fn delete_device(conn: &Connection, user_id: &str, device_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id],
    )?;
    conn.execute(
        "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id],
    )?;
    Ok(())
}

/// Deletes every device of a user except `keep` (if given), with their tokens.
pub fn delete_devices_except(conn: &Connection, user_id: &str, keep: Option<&str>) -> Result<()> {
    let keep = keep.unwrap_or("");
    conn.execute(
        "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id != ?2",
        params![user_id, keep],
    )?;
    conn.execute(
        "DELETE FROM devices WHERE user_id = ?1 AND device_id != ?2",
        params![user_id, keep],
    )?;
    Ok(())
}

/// Profile fields of a user.
pub fn get_profile(
    conn: &Connection,
    user_id: &str,
) -> Result<Option<(Option<String>, Option<String>)>> {
    Ok(conn
        .prepare_cached("SELECT displayname, avatar_url FROM users WHERE user_id = ?1")?
        .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Sets the display name (or clears it with `None`).
pub fn set_displayname(conn: &Connection, user_id: &str, name: Option<&str>) -> Result<()> {
    conn.execute(
        "UPDATE users SET displayname = ?2 WHERE user_id = ?1",
        params![user_id, name],
    )?;
    Ok(())
}

/// Sets the avatar URL (or clears it with `None`).
pub fn set_avatar_url(conn: &Connection, user_id: &str, url: Option<&str>) -> Result<()> {
    conn.execute(
        "UPDATE users SET avatar_url = ?2 WHERE user_id = ?1",
        params![user_id, url],
    )?;
    Ok(())
}

/// One device of a user.
pub fn get_device(conn: &Connection, user_id: &str, device_id: &str) -> Result<Option<DeviceRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT device_id, display_name, last_seen_ts FROM devices
             WHERE user_id = ?1 AND device_id = ?2",
        )?
        .query_row(params![user_id, device_id], |r| {
            Ok(DeviceRow {
                device_id: r.get(0)?,
                display_name: r.get(1)?,
                last_seen_ts: r.get(2)?,
            })
        })
        .optional()?)
}

/// Sets (or clears) a device's display name; false if there is no such device.
pub fn set_device_display_name(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    name: Option<&str>,
) -> Result<bool> {
    let n = conn.execute(
        "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id, name],
    )?;
    Ok(n == 1)
}

/// Marks an account deactivated: no password, no profile. The row stays, so the name
/// cannot be registered again.
pub fn deactivate_user(conn: &Connection, user_id: &str) -> Result<()> {
    conn.execute(
        "UPDATE users SET deactivated = 1, password_hash = NULL, displayname = NULL, avatar_url = NULL
         WHERE user_id = ?1",
        params![user_id],
    )?;
    Ok(())
}

/// A user the user directory may show: `(user_id, localpart, displayname, avatar_url)`.
pub type DirectoryEntry = (String, String, Option<String>, Option<String>);

/// Active local users `requester` may find in the user directory: those sharing a joined
/// room with them, and those joined to a public room (join rule `public`, or published in
/// the room directory).
pub fn directory_candidates(conn: &Connection, requester: &str) -> Result<Vec<DirectoryEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.user_id, u.localpart, u.displayname, u.avatar_url FROM users u
         WHERE u.deactivated = 0 AND EXISTS (
            SELECT 1 FROM memberships m WHERE m.user_id = u.user_id AND m.membership = 'join' AND (
                EXISTS (SELECT 1 FROM memberships me WHERE me.room_id = m.room_id
                        AND me.user_id = ?1 AND me.membership = 'join')
                OR EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = m.room_id AND r.published = 1)
                OR EXISTS (SELECT 1 FROM current_state cs JOIN events e ON e.event_id = cs.event_id
                        WHERE cs.room_id = m.room_id AND cs.type = 'm.room.join_rules'
                          AND cs.state_key = '' AND json_extract(e.json, '$.content.join_rule') = 'public')))
         ORDER BY u.user_id",
    )?;
    let rows = stmt.query_map([requester], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes the access tokens of one device (a new login on it replaces them).
pub fn delete_device_tokens(conn: &Connection, user_id: &str, device_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2")?
        .execute(params![user_id, device_id])?;
    Ok(())
}
