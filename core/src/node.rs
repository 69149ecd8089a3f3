//! A running node: the services plus the client API listener.
//!
//! # Who owns the tasks
//!
//! Every task the node starts is owned, so that when [`Node::shutdown`] returns the client
//! port and the peer-to-peer ports are closed and the database is closed:
//!
//! - The client API server is a task of the node: it stops accepting at once, lets the
//!   requests in progress finish (long-polling syncs end with the notifier), and is awaited
//!   for at most [`CLIENT_DRAIN`]; after that it is aborted and its listener closed.
//! - Everything else that runs in the background is spawned through the services'
//!   [`Tasks`](crate::tasks::Tasks) and nowhere else: the swarm driver, the federation accept
//!   loop and each stream it serves, the outbox and its deliveries, catch-up, the inbound
//!   resolver and its retries, device-list fetches, the presence sent after a join, typing
//!   expiries, the address-book writer and the HTTP connections of outgoing federation
//!   requests. Shutdown cancels them all (each is dropped at its next await point) and
//!   awaits them for at most [`TASKS_DRAIN`].
//! - Work that is not a task of its own (a closure on tokio's blocking pool for one read or
//!   write, a request handler) belongs to the task that awaits it. A blocking closure runs
//!   to its end even when its task is dropped, so shutdown last waits, for at most
//!   [`DB_CLOSE`], until the last database handle is gone, which closes every connection.
//!
//! So, apart from the client API server, nothing in the node calls `tokio::spawn` directly:
//! a new background task goes through [`Tasks::spawn`](crate::tasks::Tasks::spawn) (or
//! [`Tasks::spawn_draining`](crate::tasks::Tasks::spawn_draining) for one that ends by itself
//! when the node stops), and embedding code does the same for tasks that use the node. A
//! task may stay detached only if it holds neither the database nor a socket and ends on
//! its own. Each bound above is only reached by a request or a task that is stuck; shutdown
//! then logs what it left behind.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{
    accounts::Login,
    config::Config,
    error::{Error, ErrorCode, Result},
    p2p::{P2p, P2pConfig},
    services::Services,
};

/// Longest the client API's requests in progress are waited for at shutdown.
pub const CLIENT_DRAIN: Duration = Duration::from_secs(5);
/// Longest the background tasks are waited for, once cancelled, at shutdown.
pub const TASKS_DRAIN: Duration = Duration::from_secs(5);
/// Longest the database is waited for to close, once everything above ended.
pub const DB_CLOSE: Duration = Duration::from_secs(5);

/// A started node. Dropping it without [`Node::shutdown`] aborts the server and cancels the
/// background tasks without waiting for them.
pub struct Node {
    services: Arc<Services>,
    client_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    p2p: Option<P2p>,
}

impl Node {
    /// Opens the data directory and starts serving the client API.
    pub async fn start(config: Config) -> Result<Self> {
        let addr = config.client_addr;
        let services = tokio::task::spawn_blocking(move || Services::open(config)).await??;
        match Self::serve(services.clone(), addr).await {
            Ok(node) => Ok(node),
            Err(e) => {
                // Whatever started is stopped, and the database closed, before the error.
                let closed = services.db.closed();
                services.tasks.stop(TASKS_DRAIN).await;
                drop(services);
                let _ = tokio::time::timeout(DB_CLOSE, closed).await;
                Err(e)
            }
        }
    }

    async fn serve(services: Arc<Services>, addr: SocketAddr) -> Result<Self> {
        let p2p = if services.config.p2p_listen.is_empty()
            && services.config.static_peers.is_empty()
            && services.config.relays.is_empty()
        {
            None
        } else {
            let p2p_config = P2pConfig {
                listen: services.config.p2p_listen.clone(),
                static_peers: services.config.static_peers.clone(),
                mdns: services.config.mdns_enabled,
                remembered: remembered_peers(&services).await,
                learned: Some(address_book(&services)),
                limits: services.config.federation_limits.clone(),
                relays: services.config.relays.clone(),
                serve_relay: services.config.serve_relay,
                relay_limits: services.config.relay_limits.clone(),
            };
            let p2p = P2p::start(&services.identity, p2p_config, &services.tasks).await?;
            crate::federation::transport::serve(
                &p2p,
                crate::federation::router(services.clone()),
                &services.config.federation_limits,
            )?;
            let client = crate::federation::transport::FederationClient::new(
                services.identity.clone(),
                p2p.clone(),
            );
            services.set_federation(client.clone());
            crate::federation::catchup::spawn(services.clone(), client.clone(), p2p.clone());
            crate::federation::outbox::spawn(services.clone(), client, p2p.clone());
            // Events left waiting by the last run (or by a migration) are tried again.
            crate::federation::inbound::resume(&services).await;
            Some(p2p)
        };
        let listener = TcpListener::bind(addr).await?;
        let client_addr = listener.local_addr()?;
        services.set_client_url(format!("http://{client_addr}"));
        let app = crate::client::router(services.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "client API server failed");
            }
        });
        tracing::info!(server_name = %services.identity.server_name(), %client_addr, "node started");
        Ok(Self {
            services,
            client_addr,
            stop: Some(stop),
            server: Some(server),
            p2p,
        })
    }

    /// The node's server name.
    pub fn server_name(&self) -> &str {
        self.services.identity.server_name().as_str()
    }

    /// The address the client API listens on.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The base URL of the client API.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> String {
        self.services.identity.peer_id().to_string()
    }

    /// Peer-to-peer listen addresses, each ending in `/p2p/<peer id>`.
    pub fn p2p_addrs(&self) -> Vec<String> {
        self.p2p
            .as_ref()
            .map(|p| p.listen_addrs().iter().map(|a| a.to_string()).collect())
            .unwrap_or_default()
    }

    /// The peer-to-peer transport, if running.
    pub fn p2p(&self) -> Option<&P2p> {
        self.p2p.as_ref()
    }

    /// The node's services (for embedding code and tests).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Creates an account (whatever the registration mode) and logs it in.
    pub async fn register_user(&self, username: &str, password: &str) -> Result<Login> {
        let user_id = self
            .services
            .accounts
            .register(&username.to_lowercase(), Some(password))
            .await?;
        self.services
            .accounts
            .issue_login(&user_id, None, None)
            .await
    }

    /// Logs an existing account in (a localpart or a full user id) and issues a new device.
    ///
    /// Fails with [`Error::InvalidCredentials`] for a wrong user name or password, and with
    /// `M_INVALID_USERNAME` for a name Matrix does not allow.
    pub async fn login(&self, username: &str, password: &str) -> Result<Login> {
        let accounts = &self.services.accounts;
        let user_id = match accounts.parse_user(username) {
            // A user id of another server names no account here, as an unknown name does not.
            Err(Error::Matrix(m)) if m.errcode == ErrorCode::Forbidden => {
                return Err(Error::InvalidCredentials);
            }
            parsed => parsed?,
        };
        accounts.check_password(&user_id, password).await?;
        accounts.issue_login(&user_id, None, None).await
    }

    /// Switches peer-to-peer networking off (app in the background) or back on; see
    /// [`P2p::set_enabled`]. The database and the client API stay up either way. A node
    /// without peer-to-peer networking accepts and ignores the call.
    pub async fn set_network_enabled(&self, enabled: bool) -> Result<()> {
        match &self.p2p {
            Some(p2p) => p2p.set_enabled(enabled).await,
            None => Ok(()),
        }
    }

    /// Stops accepting requests, lets running ones finish, stops every background task and
    /// closes the node. When it returns, the client and peer-to-peer ports are closed and so
    /// is the database (see the module documentation for the bounds).
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.services.notifier.close();
        // The swarm and the federation stop with the tasks, at once, as they always did.
        self.services.tasks.cancel();
        let mut result = Ok(());
        // Long-polling syncs end with the notifier; give in-flight requests a bounded time.
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(CLIENT_DRAIN, &mut server).await {
                Ok(joined) => result = joined.map_err(Error::from),
                Err(_) => {
                    tracing::warn!(
                        "client API did not finish within {CLIENT_DRAIN:?}; closing anyway"
                    );
                    server.abort();
                    let _ = server.await;
                }
            }
        }
        let left = self.services.tasks.stop(TASKS_DRAIN).await;
        if left > 0 {
            tracing::warn!(
                tasks = left,
                "background tasks did not end within {TASKS_DRAIN:?}"
            );
        }
        let closed = self.services.db.closed();
        drop(self);
        if tokio::time::timeout(DB_CLOSE, closed).await.is_err() {
            tracing::warn!("the database is still in use {DB_CLOSE:?} after shutdown");
        }
        result
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.services.tasks.cancel();
    }
}

/// Most peers of the persistent address book redialled at start.
const MAX_REMEMBERED_REDIALS: usize = 32;

/// Full multiaddrs of the peers in the address book that this node has a reason to contact
/// (added by the app, sharing a room, or with something waiting in the outbox), the most
/// recently seen [`MAX_REMEMBERED_REDIALS`] of them, each with how it was found.
async fn remembered_peers(
    services: &Arc<Services>,
) -> Vec<(crate::p2p::Multiaddr, crate::p2p::Discovery)> {
    let local = services.identity.server_name().to_string();
    let rows = services
        .db
        .read(move |conn| {
            crate::storage::federation::peers_to_redial(conn, &local, MAX_REMEMBERED_REDIALS)
        })
        .await
        .unwrap_or_default();
    let mut out = Vec::new();
    for row in rows {
        let Ok(peer) = row.peer_id.parse::<crate::p2p::PeerId>() else {
            continue;
        };
        let discovered =
            crate::p2p::Discovery::parse(&row.discovered).unwrap_or(crate::p2p::Discovery::Inbound);
        for a in row.addresses {
            if let Ok(addr) = a.parse::<crate::p2p::Multiaddr>() {
                out.push((addr.with_p2p(peer).unwrap_or_else(|a| a), discovered));
            }
        }
    }
    out
}

/// A sender whose addresses end up in the persistent address book (at most 64 waiting).
fn address_book(
    services: &Arc<Services>,
) -> tokio::sync::mpsc::Sender<(
    crate::p2p::PeerId,
    crate::p2p::Multiaddr,
    crate::p2p::Discovery,
)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(
        crate::p2p::PeerId,
        crate::p2p::Multiaddr,
        crate::p2p::Discovery,
    )>(64);
    let db = services.db.clone();
    // It ends when the swarm, which holds the sender, stops; what the swarm sent is written.
    services.tasks.spawn_draining(async move {
        while let Some((peer, addr, how)) = rx.recv().await {
            let row = crate::storage::federation::PeerRow {
                peer_id: peer.to_string(),
                server_name: crate::identity::server_name_for_peer(&peer),
                addresses: vec![addr.to_string()],
                discovered: how.as_str().to_owned(),
                last_seen_ts: crate::storage::now_ms(),
            };
            if let Err(e) = db
                .write(move |txn| crate::storage::federation::upsert_peer(txn, &row))
                .await
            {
                tracing::warn!(error = %e, "could not record a peer");
            }
        }
    });
    tx
}

/// The peers in a data directory's address book (`neurite peers`).
pub async fn known_peers(config: Config) -> Result<Vec<crate::storage::federation::PeerRow>> {
    let services = tokio::task::spawn_blocking(move || Services::open(config)).await??;
    services.db.read(crate::storage::federation::peers).await
}

/// Creates an account in a data directory without starting a node (`neurite register`).
pub async fn register_offline(config: Config, username: &str, password: &str) -> Result<String> {
    let services = tokio::task::spawn_blocking(move || Services::open(config)).await??;
    let user_id = services
        .accounts
        .register(&username.to_lowercase(), Some(password))
        .await?;
    Ok(user_id.to_string())
}
