//! The configuration record an app fills in, and its translation into the core's [`Config`].

use std::net::{Ipv4Addr, SocketAddr};

use neurite_core::{Config, RegistrationMode as CoreRegistration, p2p::Multiaddr};

use crate::error::NeuriteError;

/// Who may create accounts through the client API's `POST /register`. Accounts made with
/// [`crate::Homeserver::register_user`] are allowed in every mode.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum RegistrationMode {
    /// Nobody (the default to choose for apps: the library creates the accounts).
    Disabled,
    /// Anyone who can reach `127.0.0.1` on this device (demos and tests).
    Open,
    /// Whoever presents this registration token (at least
    /// [`neurite_core::MIN_REGISTRATION_TOKEN_LEN`], 16, characters: any app on the device
    /// may try to guess it).
    Token { token: String },
}

/// Everything a [`crate::Homeserver`] needs.
#[derive(Debug, Clone, uniffi::Record)]
pub struct HomeserverConfig {
    /// Directory for the database, the node key and media; created if missing. Use the
    /// app's private files directory.
    pub data_dir: String,
    /// Port of the client API on `127.0.0.1`; `0` picks a free port at each start.
    pub client_port: u16,
    /// Peer-to-peer listen multiaddrs, e.g. `/ip4/0.0.0.0/tcp/0`. Empty together with
    /// `static_peers`: no peer-to-peer networking at all.
    pub p2p_listen: Vec<String>,
    /// Peers to dial at start, as multiaddrs ending in `/p2p/<peer id>`.
    pub static_peers: Vec<String>,
    /// Discover peers on the local network with mDNS (Android needs a `MulticastLock`,
    /// iOS the multicast entitlement).
    pub mdns_enabled: bool,
    /// Who may register through the client API.
    pub registration: RegistrationMode,
    /// A `tracing` filter such as `info,neurite_core=debug`, applied to the log sink set with
    /// [`crate::set_log_sink`] when this homeserver is created. `None` keeps the sink's filter.
    pub log_filter: Option<String>,
}

impl HomeserverConfig {
    /// Checks every field and builds the core configuration.
    pub(crate) fn to_core(&self) -> Result<Config, NeuriteError> {
        if self.data_dir.trim().is_empty() {
            return Err(NeuriteError::invalid_config("data_dir must not be empty"));
        }
        let mut config = Config::new(&self.data_dir);
        config.client_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        config.registration = match &self.registration {
            RegistrationMode::Disabled => CoreRegistration::Disabled,
            RegistrationMode::Open => CoreRegistration::Open,
            RegistrationMode::Token { token }
                if token.chars().count() < neurite_core::MIN_REGISTRATION_TOKEN_LEN =>
            {
                return Err(NeuriteError::invalid_config(format!(
                    "the registration token must have at least {} characters",
                    neurite_core::MIN_REGISTRATION_TOKEN_LEN
                )));
            }
            RegistrationMode::Token { token } => CoreRegistration::Token(token.clone()),
        };
        config.p2p_listen = self
            .p2p_listen
            .iter()
            .map(|a| parse_multiaddr("p2p_listen", a))
            .collect::<Result<_, _>>()?;
        config.static_peers = self
            .static_peers
            .iter()
            .map(|a| parse_peer_addr("static_peers", a))
            .collect::<Result<_, _>>()?;
        config.mdns_enabled = self.mdns_enabled;
        if let Some(filter) = &self.log_filter {
            crate::logging::check_filter(filter)?;
        }
        Ok(config)
    }
}

fn parse_multiaddr(field: &str, addr: &str) -> Result<Multiaddr, NeuriteError> {
    addr.parse().map_err(|e| {
        NeuriteError::invalid_config(format!("{field}: {addr:?} is not a multiaddr ({e})"))
    })
}

/// A multiaddr that names its peer (`…/p2p/<peer id>`).
pub(crate) fn parse_peer_addr(field: &str, addr: &str) -> Result<Multiaddr, NeuriteError> {
    let parsed = parse_multiaddr(field, addr)?;
    if neurite_core::p2p::peer_of(&parsed).is_none() {
        return Err(NeuriteError::invalid_config(format!(
            "{field}: {addr:?} does not end in /p2p/<peer id>"
        )));
    }
    Ok(parsed)
}
