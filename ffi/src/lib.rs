//! Neurite as a library: a Matrix homeserver an app starts in its own process and talks to
//! over `http://127.0.0.1:PORT` with any Matrix client SDK.
//!
//! The API is exported with UniFFI (namespace `neurite`): [`Homeserver`] built from a
//! [`HomeserverConfig`], [`Session`]s for accounts made through the library, [`PeerInfo`]
//! and [`Discovery`] for the peer-to-peer side, [`HomeserverListener`]s (each kept
//! registered by a [`ListenerHandle`]) for state and peer callbacks, and [`set_log_sink`]
//! for logs. Every fallible call returns [`NeuriteError`]; every call that waits for the
//! node is async, so none blocks the caller's thread. Each homeserver owns a small tokio
//! runtime; all the homeserver logic lives in `neurite-core`.

mod config;
mod error;
mod listeners;
mod logging;
mod peers;

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
};

use neurite_core::{Node, accounts::Login, p2p::P2p};
use tokio::runtime::{Handle, Runtime};

pub use config::{HomeserverConfig, RegistrationMode};
pub use error::NeuriteError;
pub use listeners::{HomeserverListener, ListenerHandle};
use listeners::{Listeners, forward_peer_events};
pub use logging::{LogLevel, LogSink, set_log_sink};
pub use peers::{Discovery, PeerInfo, PeerPath};

uniffi::setup_scaffolding!("neurite");

/// Where a homeserver is in its life.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum HomeserverState {
    Stopped,
    Starting,
    Running,
    Stopping,
    /// `start()` failed; the message says why. The homeserver is stopped.
    Failed {
        message: String,
    },
}

/// An account logged in through the library: hand these to a Matrix client SDK.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Session {
    /// `@name:<server name>`.
    pub user_id: String,
    /// The device created for this login.
    pub device_id: String,
    /// Bearer token for the client API.
    pub access_token: String,
    /// The client API's base URL, `http://127.0.0.1:PORT`.
    pub homeserver_url: String,
}

/// What a running homeserver holds.
struct Running {
    node: Node,
    /// The task passing peer events to the listeners: one of the node's tasks, stopped first.
    events: Option<tokio::task::AbortHandle>,
}

/// What the synchronous getters read while the homeserver runs.
#[derive(Default, Clone)]
struct Live {
    client_url: Option<String>,
    p2p: Option<P2p>,
}

/// A Matrix homeserver living in the app's process.
///
/// `start()` opens the data directory and serves the client API on `127.0.0.1`; `stop()`
/// closes the ports and the database so that `start()` works again. Several homeservers
/// (with different data directories) can run in one process.
#[derive(uniffi::Object)]
pub struct Homeserver {
    config: neurite_core::Config,
    log_filter: Option<String>,
    server_name: String,
    peer_id: String,
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
    running: tokio::sync::Mutex<Option<Running>>,
    live: Mutex<Live>,
    listeners: Listeners,
    network_enabled: Mutex<bool>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[uniffi::export]
impl Homeserver {
    /// Checks the configuration and loads (or creates) the node key in `data_dir`, so that
    /// `server_name()` and `peer_id()` answer before `start()`. Fails with `InvalidConfig`
    /// or `Storage`.
    #[uniffi::constructor]
    pub fn new(config: HomeserverConfig) -> Result<Arc<Self>, NeuriteError> {
        let core = config.to_core()?;
        std::fs::create_dir_all(&core.data_dir).map_err(|e| NeuriteError::Storage {
            message: format!("cannot create {}: {e}", config.data_dir),
        })?;
        let identity = neurite_core::identity::Identity::load_or_create(&core.data_dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("neurite")
            .enable_all()
            .build()
            .map_err(|e| NeuriteError::internal(format!("cannot start the runtime: {e}")))?;
        if let Some(filter) = &config.log_filter {
            logging::set_filter(filter)?;
        }
        Ok(Arc::new(Self {
            config: core,
            log_filter: config.log_filter,
            server_name: identity.server_name().to_string(),
            peer_id: identity.peer_id().to_string(),
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            running: tokio::sync::Mutex::new(None),
            live: Mutex::new(Live::default()),
            listeners: Listeners::default(),
            network_enabled: Mutex::new(true),
        }))
    }

    /// Opens the database and starts the client API and the peer-to-peer network.
    /// Fails with `AlreadyRunning`, `Storage` or `Network`.
    pub async fn start(self: Arc<Self>) -> Result<(), NeuriteError> {
        let this = self.clone();
        self.on_runtime(async move { this.start_inner().await })
            .await?
    }

    /// Stops serving, closes the peer-to-peer network and the database. Fails with
    /// `NotRunning`.
    pub async fn stop(self: Arc<Self>) -> Result<(), NeuriteError> {
        let this = self.clone();
        self.on_runtime(async move { this.stop_inner().await })
            .await?
    }

    /// The Matrix server name (derived from the node key; stable across restarts).
    pub fn server_name(&self) -> String {
        self.server_name.clone()
    }

    /// The libp2p peer id (derived from the same key).
    pub fn peer_id(&self) -> String {
        self.peer_id.clone()
    }

    /// The peer-to-peer addresses peers reach this homeserver at, each ending in
    /// `/p2p/<peer id>`, e.g. for a pairing QR code: where it listens directly, then through
    /// each relay holding its reservation (`<relay>/p2p-circuit/p2p/<id>`, which works from
    /// other networks too). Empty while stopped or while the network is disabled.
    pub fn listen_addrs(&self) -> Vec<String> {
        lock(&self.live)
            .p2p
            .as_ref()
            .map(|p| p.listen_addrs().iter().map(|a| a.to_string()).collect())
            .unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT` while running, `None` while stopped.
    pub fn client_base_url(&self) -> Option<String> {
        lock(&self.live).client_url.clone()
    }

    /// Creates an account (whatever the registration mode) and logs it in. Fails with
    /// `NotRunning`, `UserExists` or `InvalidUsername`.
    pub async fn register_user(
        self: Arc<Self>,
        username: String,
        password: String,
    ) -> Result<Session, NeuriteError> {
        if password.is_empty() {
            return Err(NeuriteError::invalid_config(
                "the password must not be empty",
            ));
        }
        let this = self.clone();
        self.on_runtime(async move {
            let running = this.running.lock().await;
            let node = &running.as_ref().ok_or(NeuriteError::NotRunning)?.node;
            let login = node.register_user(&username, &password).await?;
            Ok(session(login, node.client_url()))
        })
        .await?
    }

    /// Logs an account in with a new device. `username` is a name or a full user id.
    /// Fails with `NotRunning`, `InvalidCredentials` (wrong name or password), `InvalidUsername`
    /// or `Forbidden` (e.g. a deactivated account).
    pub async fn login(
        self: Arc<Self>,
        username: String,
        password: String,
    ) -> Result<Session, NeuriteError> {
        let this = self.clone();
        self.on_runtime(async move {
            let running = this.running.lock().await;
            let node = &running.as_ref().ok_or(NeuriteError::NotRunning)?.node;
            let login = node.login(&username, &password).await?;
            Ok(session(login, node.client_url()))
        })
        .await?
    }

    /// Every peer the homeserver knows of (empty while stopped, or without peer-to-peer
    /// networking). Fails with `Network` if the peer-to-peer network has stopped.
    pub async fn peers(self: Arc<Self>) -> Result<Vec<PeerInfo>, NeuriteError> {
        let Some(p2p) = lock(&self.live).p2p.clone() else {
            return Ok(Vec::new());
        };
        let peers = self
            .on_runtime(async move { p2p.try_peers().await })
            .await??;
        Ok(peers.into_iter().map(PeerInfo::from).collect())
    }

    /// Dials a peer at a multiaddr ending in `/p2p/<peer id>` (scanned from its QR code)
    /// and remembers it. Fails with `InvalidConfig` for a bad address, `NotRunning`, or
    /// `Network` (no peer-to-peer networking configured, the network is disabled, or the
    /// dial could not start).
    pub async fn add_peer(self: Arc<Self>, multiaddr: String) -> Result<(), NeuriteError> {
        let addr = config::parse_peer_addr("multiaddr", &multiaddr)?;
        if self.client_base_url().is_none() {
            return Err(NeuriteError::NotRunning);
        }
        let p2p = lock(&self.live)
            .p2p
            .clone()
            .ok_or_else(|| NeuriteError::Network {
                message: "peer-to-peer networking is not configured".into(),
            })?;
        self.on_runtime(async move { p2p.add_peer(addr).await })
            .await??;
        Ok(())
    }

    /// Switches peer-to-peer networking off (the app went to the background: listeners,
    /// mDNS and connections close; the database and the client API stay) or back on
    /// (listen again, redial known peers, catch up; `listen_addrs()` has the new addresses
    /// once it returns). The choice is remembered across
    /// `stop()`/`start()`, and applies at the next `start()` when called while stopped.
    /// Fails with `Network` when the switch fails (e.g. a listen address is taken); the
    /// choice is remembered all the same.
    pub async fn set_network_enabled(self: Arc<Self>, enabled: bool) -> Result<(), NeuriteError> {
        let this = self.clone();
        self.on_runtime(async move {
            // Under the lock `start()` holds, so a start in progress sees the new choice.
            let running = this.running.lock().await;
            *lock(&this.network_enabled) = enabled;
            match running.as_ref() {
                Some(running) => Ok(running.node.set_network_enabled(enabled).await?),
                None => Ok(()),
            }
        })
        .await?
    }

    /// Registers an object that receives state and peer callbacks, next to any others: each
    /// registered listener hears every event. It stays registered while the returned handle
    /// lives; keep the handle, and cancel it (or let it go) to stop the callbacks.
    pub fn add_listener(&self, listener: Arc<dyn HomeserverListener>) -> Arc<ListenerHandle> {
        Arc::new(self.listeners.add(listener))
    }
}

impl Homeserver {
    async fn start_inner(&self) -> Result<(), NeuriteError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(NeuriteError::AlreadyRunning);
        }
        if let Some(filter) = &self.log_filter {
            logging::set_filter(filter)?;
        }
        self.notify_state(HomeserverState::Starting);
        let node = match Node::start(self.config.clone()).await {
            Ok(node) => node,
            Err(e) => {
                let err = NeuriteError::from(e);
                self.notify_state(HomeserverState::Failed {
                    message: err.to_string(),
                });
                return Err(err);
            }
        };
        let enabled = *lock(&self.network_enabled);
        if !enabled && let Err(e) = node.set_network_enabled(false).await {
            tracing::warn!(error = %e, "could not start with the network disabled");
        }
        let events = node.p2p().map(|p2p| {
            let events = p2p.subscribe();
            node.services().tasks.spawn(forward_peer_events(
                p2p.clone(),
                events,
                self.listeners.clone(),
            ))
        });
        *lock(&self.live) = Live {
            client_url: Some(node.client_url()),
            p2p: node.p2p().cloned(),
        };
        *running = Some(Running { node, events });
        self.notify_state(HomeserverState::Running);
        Ok(())
    }

    async fn stop_inner(&self) -> Result<(), NeuriteError> {
        let mut running = self.running.lock().await;
        let Running { node, events } = running.take().ok_or(NeuriteError::NotRunning)?;
        self.notify_state(HomeserverState::Stopping);
        *lock(&self.live) = Live::default();
        // No peer callback after `Stopping`; shutdown awaits the task with the others.
        if let Some(events) = events {
            events.abort();
        }
        let result = node.shutdown().await.map_err(NeuriteError::from);
        self.notify_state(HomeserverState::Stopped);
        result
    }

    fn notify_state(&self, state: HomeserverState) {
        self.listeners.state_changed(state);
    }

    /// Runs a future on this homeserver's runtime; awaitable from any executor.
    async fn on_runtime<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, NeuriteError> {
        self.handle
            .spawn(fut)
            .await
            .map_err(|e| NeuriteError::internal(format!("task failed: {e}")))
    }
}

impl Drop for Homeserver {
    fn drop(&mut self) {
        // Dropped without stop(): close the node inside its runtime, then let the runtime go
        // without blocking (this may run on any thread, even one of the runtime's own).
        let _guard = self.handle.enter();
        if let Ok(mut running) = self.running.try_lock() {
            running.take();
        }
        if let Some(runtime) = lock(&self.runtime).take() {
            runtime.shutdown_background();
        }
    }
}

fn session(login: Login, homeserver_url: String) -> Session {
    Session {
        user_id: login.user_id.to_string(),
        device_id: login.device_id,
        access_token: login.access_token,
        homeserver_url,
    }
}
