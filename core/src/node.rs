//! A running node: the services plus the client API listener.

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{
    accounts::Login,
    config::Config,
    error::{Error, Result},
    services::Services,
};

/// A started node. Dropping it without [`Node::shutdown`] aborts the server.
pub struct Node {
    services: Arc<Services>,
    client_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Node {
    /// Opens the data directory and starts serving the client API.
    pub async fn start(config: Config) -> Result<Self> {
        let addr = config.client_addr;
        let services = tokio::task::spawn_blocking(move || Services::open(config)).await??;
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

    /// Stops accepting requests, lets running ones finish, and closes the node.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.services.notifier.close();
        // Long-polling syncs end with the notifier; give in-flight requests a bounded time.
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
                Ok(joined) => joined.map_err(Error::from)?,
                Err(_) => tracing::warn!("client API did not finish within 5 s; closing anyway"),
            }
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
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
