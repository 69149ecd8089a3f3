//! Neurite: a Matrix homeserver for one device.
//!
//! A node keeps its data in one SQLite file, serves the Matrix client-server API on
//! `127.0.0.1`, and stores every room as a signed event graph checked with
//! `ruma::state_res`, so that federation can reuse the same code paths.
//!
//! Layout: [`storage`] holds all SQL; [`rooms`] the event graph, membership and timelines;
//! [`accounts`], [`sync`], [`typing`], [`user_data`], [`media`], [`e2ee`] (keys, to-device
//! messages, key backup) the other services; [`client`] the HTTP handlers; [`node`] starts and
//! stops it all, and [`tasks`] owns every background task.

pub mod accounts;
pub mod client;
pub mod config;
pub mod deactivation;
pub mod e2ee;
pub mod error;
pub mod federation;
pub mod filter;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod media;
pub mod node;
pub mod notifier;
pub mod p2p;
pub mod presence;
pub mod push;
pub mod rate_limit;
pub mod rooms;
pub mod services;
pub mod sliding_sync;
pub mod storage;
pub mod sync;
pub mod tasks;
pub mod typing;
pub mod uia;
pub mod user_data;
pub mod validate;

pub use config::{
    Config, FederationLimits, MIN_REGISTRATION_TOKEN_LEN, PasswordCost, RateLimit, RateLimits,
    RegistrationMode,
};
pub use error::{Error, ErrorCode, MatrixError};
pub use node::{Node, known_peers, register_offline};
