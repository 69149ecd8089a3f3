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
//!
//! This module holds the service and the device-list change stream; the keys themselves are
//! handled in [`device_keys`] (device, one-time and fallback keys) and [`cross_signing`]
//! (cross-signing keys and the signatures users make with them).

pub mod backup;
mod cross_signing;
mod device_keys;
pub mod remote;
pub mod signing;
pub mod sync;
pub mod to_device;

use std::sync::Arc;

use ruma::{OwnedServerName, UserId};

pub use self::{
    cross_signing::{CrossSigningOutcome, CrossSigningUpload},
    device_keys::KeysUpload,
};
use crate::{
    error::{Error, MatrixError, Result},
    notifier::Notifier,
    storage::Db,
};

/// The end-to-end encryption service.
#[derive(Clone)]
pub struct E2ee {
    db: Db,
    notifier: Arc<Notifier>,
    server_name: OwnedServerName,
}

fn invalid(message: impl Into<String>) -> Error {
    MatrixError::invalid_param(message).into()
}

fn bad_json(message: impl Into<String>) -> Error {
    MatrixError::bad_json(message).into()
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
}
