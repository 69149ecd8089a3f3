//! Accounts: registration, passwords, devices and access tokens.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use ruma::{OwnedUserId, ServerName, UserId};
use sha2::{Digest, Sha256};

use crate::{
    config::PasswordCost,
    error::{Error, ErrorCode, MatrixError, Result},
    notifier::Notifier,
    storage::{Db, accounts as store, keys, now_ms},
};

/// The user and device behind an access token.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device.
    pub device_id: String,
}

/// A freshly issued login.
#[derive(Debug, Clone)]
pub struct Login {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device.
    pub device_id: String,
    /// The access token (only ever shown once).
    pub access_token: String,
}

/// The account service.
#[derive(Clone)]
pub struct Accounts {
    db: Db,
    server_name: ruma::OwnedServerName,
    cost: PasswordCost,
    notifier: Arc<Notifier>,
    /// One password hash at a time: each takes `cost.memory_kib` of memory, and the
    /// allocator keeps what concurrent hashes used long after they finish.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Sessions of recently seen tokens, so that most requests authenticate without a trip
    /// to the database.
    sessions: Arc<std::sync::Mutex<SessionCache>>,
}

/// Most tokens remembered; past that the cache starts over.
const MAX_CACHED_SESSIONS: usize = 256;

/// Token hash → session, valid while the database's token generation is `generation`.
#[derive(Default)]
struct SessionCache {
    generation: u64,
    sessions: std::collections::HashMap<Vec<u8>, Session>,
}

impl SessionCache {
    fn get(&mut self, generation: u64, hash: &[u8]) -> Option<Session> {
        if self.generation != generation {
            self.generation = generation;
            self.sessions.clear();
            return None;
        }
        self.sessions.get(hash).cloned()
    }

    /// Remembers an answer read after the generation was `generation`; an answer read before
    /// a token was removed is dropped here, because the removal moved the generation.
    fn put(&mut self, generation: u64, hash: Vec<u8>, session: Session) {
        if self.generation != generation {
            return;
        }
        if self.sessions.len() >= MAX_CACHED_SESSIONS {
            self.sessions.clear();
        }
        self.sessions.insert(hash, session);
    }
}

/// Random alphanumeric string of `len` characters, each drawn uniformly from 62 symbols.
///
/// # Panics
///
/// If the operating system's random source fails: a token drawn without it could be
/// guessed, and no caller can go on safely. [`check_random_source`] runs at start so that
/// a node on a system without one never starts.
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // The largest multiple of 62 below 256: bytes at or above it are drawn again, so that
    // every symbol is equally likely.
    const ACCEPT_BELOW: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut bytes)
            .unwrap_or_else(|e| panic!("the system random source failed: {e}"));
        for &b in bytes.iter().filter(|&&b| b < ACCEPT_BELOW) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
        }
    }
    out
}

/// Fails if the operating system's random source does not work (checked once at start).
pub fn check_random_source() -> Result<()> {
    let mut probe = [0u8; 16];
    getrandom::fill(&mut probe)
        .map_err(|e| Error::Key(format!("the system random source failed: {e}")))
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether a localpart is allowed for a new user (the spec's historical-free grammar).
pub fn valid_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart.len() <= 200
        && localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        )
}

impl Accounts {
    /// Creates the service.
    pub fn new(
        db: Db,
        server_name: &ServerName,
        cost: PasswordCost,
        notifier: Arc<Notifier>,
    ) -> Self {
        Self {
            db,
            server_name: server_name.to_owned(),
            cost,
            notifier,
            hashing: Arc::new(tokio::sync::Semaphore::new(1)),
            sessions: Default::default(),
        }
    }

    /// The full user id for a localpart of this server.
    pub fn user_id(&self, localpart: &str) -> Result<OwnedUserId> {
        UserId::parse(format!("@{localpart}:{}", self.server_name)).map_err(|_| {
            MatrixError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidUsername,
                "Invalid username",
            )
            .into()
        })
    }

    /// Accepts a localpart or a full user id of this server; returns the user id.
    pub fn parse_user(&self, user: &str) -> Result<OwnedUserId> {
        if user.starts_with('@') {
            let id =
                UserId::parse(user).map_err(|_| MatrixError::invalid_param("Invalid user id"))?;
            if id.server_name() != self.server_name {
                return Err(MatrixError::forbidden("User is not local to this server").into());
            }
            // Localparts are stored lowercased, so `@Alice:server` names `@alice:server`.
            if id.localpart().bytes().any(|b| b.is_ascii_uppercase()) {
                return self.user_id(&id.localpart().to_lowercase());
            }
            Ok(id)
        } else {
            self.user_id(&user.to_lowercase())
        }
    }

    fn hasher(&self) -> Result<Argon2<'static>> {
        let params = argon2::Params::new(self.cost.memory_kib, self.cost.iterations, 1, None)
            .map_err(|e| Error::Key(e.to_string()))?;
        Ok(Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    async fn hash_password(&self, password: &str) -> Result<String> {
        let hasher = self.hasher()?;
        let password = password.to_owned();
        let _turn = self.hashing.acquire().await;
        tokio::task::spawn_blocking(move || {
            hasher
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::Key(e.to_string()))
        })
        .await?
    }

    /// Checks `localpart` is free and valid: `M_INVALID_USERNAME`, `M_USER_IN_USE`.
    pub async fn check_available(&self, localpart: &str) -> Result<()> {
        if !valid_localpart(localpart) {
            return Err(MatrixError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidUsername,
                "Usernames may contain only a-z, 0-9, and . _ = - / +",
            )
            .into());
        }
        let lp = localpart.to_owned();
        if self
            .db
            .read(move |c| store::localpart_exists(c, &lp))
            .await?
        {
            return Err(MatrixError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorCode::UserInUse,
                "User ID already taken",
            )
            .into());
        }
        Ok(())
    }

    /// Creates an account. Fails with `M_USER_IN_USE` if the name is taken.
    pub async fn register(&self, localpart: &str, password: Option<&str>) -> Result<OwnedUserId> {
        self.check_available(localpart).await?;
        let user_id = self.user_id(localpart)?;
        let hash = match password {
            Some(p) => Some(self.hash_password(p).await?),
            None => None,
        };
        let (uid, lp) = (user_id.to_string(), localpart.to_owned());
        let inserted = self
            .db
            .write(move |txn| store::insert_user(txn, &uid, &lp, hash.as_deref(), now_ms()))
            .await?;
        if !inserted {
            return Err(MatrixError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorCode::UserInUse,
                "User ID already taken",
            )
            .into());
        }
        Ok(user_id)
    }

    /// Issues a new access token for a (new or existing) device.
    pub async fn issue_login(
        &self,
        user_id: &UserId,
        device_id: Option<String>,
        display_name: Option<String>,
    ) -> Result<Login> {
        let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase());
        let access_token = format!("nrt_{}", random_string(40));
        let hash = token_hash(&access_token);
        let (uid, did) = (user_id.to_string(), device_id.clone());
        self.db
            .write(move |txn| {
                let now = now_ms();
                store::upsert_device(txn, &uid, &did, display_name.as_deref(), now)?;
                // A login on an existing device replaces its earlier sessions.
                store::delete_device_tokens(txn, &uid, &did)?;
                store::insert_token(txn, &hash, &uid, &did, now)
            })
            .await?;
        Ok(Login {
            user_id: user_id.to_owned(),
            device_id,
            access_token,
        })
    }

    /// Verifies a password; [`Error::InvalidCredentials`] (a client's `403 M_FORBIDDEN`) on any
    /// mismatch or unknown user.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let uid = user_id.to_string();
        let user = self.db.read(move |c| store::get_user(c, &uid)).await?;
        let Some(user) = user else {
            return Err(Error::InvalidCredentials);
        };
        if user.deactivated {
            return Err(MatrixError::new(
                axum::http::StatusCode::FORBIDDEN,
                ErrorCode::UserDeactivated,
                "Account deactivated",
            )
            .into());
        }
        let Some(hash) = user.password_hash else {
            return Err(Error::InvalidCredentials);
        };
        let hasher = self.hasher()?;
        let password = password.to_owned();
        let _turn = self.hashing.acquire().await;
        let ok = tokio::task::spawn_blocking(move || {
            hasher
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await?;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidCredentials)
        }
    }

    /// Whether `password` is the user's, for a user-interactive auth stage: `false` on a
    /// mismatch or an account that cannot log in, an error only when checking failed.
    pub async fn password_matches(&self, user_id: &UserId, password: &str) -> Result<bool> {
        match self.check_password(user_id, password).await {
            Ok(()) => Ok(true),
            Err(Error::InvalidCredentials | Error::Matrix(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Finds the session of an access token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Session>> {
        let hash = token_hash(token);
        // The generation is read before the database, so a removal that commits during the
        // lookup moves it and keeps the stale answer out of the cache.
        let generation = self.db.token_generation();
        if let Some(session) = self.cached_sessions().get(generation, &hash) {
            return Ok(Some(session));
        }
        let key = hash.clone();
        let owner = self.db.read(move |c| store::token_owner(c, &key)).await?;
        let session = owner.and_then(|o| {
            UserId::parse(o.user_id).ok().map(|user_id| Session {
                user_id,
                device_id: o.device_id,
            })
        });
        if let Some(s) = &session {
            self.cached_sessions().put(generation, hash, s.clone());
        }
        Ok(session)
    }

    fn cached_sessions(&self) -> std::sync::MutexGuard<'_, SessionCache> {
        // The cache holds no invariant a panic could break half-way.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs a device out (deletes the device, its tokens and its keys).
    pub async fn logout(&self, session: &Session) -> Result<()> {
        self.delete_devices(&session.user_id, vec![session.device_id.clone()])
            .await
    }

    /// Logs every device of the user out.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let uid = user_id.to_string();
        self.db
            .write(move |txn| {
                let gone = crate::e2ee::remote::device_ids(txn, &uid)?;
                store::delete_devices_except(txn, &uid, None)?;
                keys::prune_orphan_signatures(txn, &uid)?;
                let pos = txn.next_pos();
                keys::mark_device_list_changed(txn, &uid, pos)?;
                crate::e2ee::remote::announce_devices(txn, &uid, &gone)
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }

    /// Locks an account for good: marks it deactivated, clears its password and profile, and
    /// deletes every device with its tokens and keys. Room memberships are the caller's part.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let uid = user_id.to_string();
        self.db
            .write(move |txn| {
                store::deactivate_user(txn, &uid)?;
                store::delete_devices_except(txn, &uid, None)?;
                crate::storage::pushers::delete_all(txn, &uid)?;
                crate::storage::pushers::clear_notifications(txn, &uid)?;
                keys::prune_orphan_signatures(txn, &uid)?;
                let pos = txn.next_pos();
                keys::mark_device_list_changed(txn, &uid, pos)
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }

    /// Sets a new password; optionally logs out every other device.
    pub async fn set_password(
        &self,
        session: &Session,
        new_password: &str,
        logout_others: bool,
    ) -> Result<()> {
        let hash = self.hash_password(new_password).await?;
        let (uid, did) = (session.user_id.to_string(), session.device_id.clone());
        self.db
            .write(move |txn| {
                store::set_password_hash(txn, &uid, &hash)?;
                if logout_others {
                    let mut gone = crate::e2ee::remote::device_ids(txn, &uid)?;
                    gone.retain(|d| *d != did);
                    store::delete_devices_except(txn, &uid, Some(&did))?;
                    keys::prune_orphan_signatures(txn, &uid)?;
                    let pos = txn.next_pos();
                    keys::mark_device_list_changed(txn, &uid, pos)?;
                    crate::e2ee::remote::announce_devices(txn, &uid, &gone)?;
                }
                Ok(())
            })
            .await?;
        if logout_others {
            self.notifier.notify();
        }
        Ok(())
    }

    /// Whether the user exists on this server.
    pub async fn exists(&self, user_id: &UserId) -> Result<bool> {
        let uid = user_id.to_string();
        Ok(self
            .db
            .read(move |c| store::get_user(c, &uid))
            .await?
            .is_some())
    }

    /// The user's devices.
    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<store::DeviceRow>> {
        let uid = user_id.to_string();
        self.db.read(move |c| store::list_devices(c, &uid)).await
    }

    /// One of the user's devices; `404 M_NOT_FOUND` if they have no such device.
    pub async fn device(&self, user_id: &UserId, device_id: &str) -> Result<store::DeviceRow> {
        let (uid, did) = (user_id.to_string(), device_id.to_owned());
        self.db
            .read(move |c| store::get_device(c, &uid, &did))
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown device").into())
    }

    /// Sets (or clears) the display name of one of the user's devices; `404 M_NOT_FOUND` if
    /// they have no such device. Other users see the name with the device's keys.
    pub async fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<String>,
    ) -> Result<()> {
        let (uid, did) = (user_id.to_string(), device_id.to_owned());
        let found = self
            .db
            .write(move |txn| {
                if !store::set_device_display_name(txn, &uid, &did, name.as_deref())? {
                    return Ok(false);
                }
                let pos = txn.next_pos();
                keys::mark_device_list_changed(txn, &uid, pos)?;
                crate::e2ee::remote::announce_devices(txn, &uid, std::slice::from_ref(&did))?;
                Ok(true)
            })
            .await?;
        if !found {
            return Err(MatrixError::not_found("Unknown device").into());
        }
        self.notifier.notify();
        Ok(())
    }

    /// Deletes devices of the user: logs them out and drops their keys and to-device inboxes
    /// (the key tables follow the device row), and marks the user's device list changed.
    /// Devices the user does not have are ignored.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: Vec<String>) -> Result<()> {
        let uid = user_id.to_string();
        self.db
            .write(move |txn| {
                let mut gone = Vec::new();
                for did in &device_ids {
                    if store::get_device(txn, &uid, did)?.is_some() {
                        store::delete_device(txn, &uid, did)?;
                        gone.push(did.clone());
                    }
                }
                keys::prune_orphan_signatures(txn, &uid)?;
                let pos = txn.next_pos();
                keys::mark_device_list_changed(txn, &uid, pos)?;
                crate::e2ee::remote::announce_devices(txn, &uid, &gone)
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_have_the_length_asked_and_use_every_symbol_evenly() {
        assert_eq!(random_string(0), "");
        assert_eq!(random_string(1).len(), 1);
        assert_eq!(random_string(200).len(), 200);
        let sample = random_string(62 * 2000);
        assert!(sample.bytes().all(|b| b.is_ascii_alphanumeric()));
        let mut counts = std::collections::HashMap::new();
        for b in sample.bytes() {
            *counts.entry(b).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 62);
        // Expected 2,000 each (standard deviation about 44). With modulo bias the first 8
        // symbols came up 5/4 as often as the rest (about 2,420 against 1,940); the bounds are
        // far enough out (almost 7 deviations) that an unbiased draw does not miss them.
        for (symbol, n) in counts {
            assert!(
                (1700..=2300).contains(&n),
                "{} drawn {n} times",
                symbol as char
            );
        }
        assert_ne!(random_string(40), random_string(40));
    }
}
