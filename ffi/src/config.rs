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
    /// Relays to keep a reservation on, as multiaddrs ending in `/p2p/<relay id>`: peers on
    /// other networks (another Wi-Fi, cellular) reach this homeserver through them, and
    /// [`crate::Homeserver::listen_addrs`] then includes `<relay>/p2p-circuit/p2p/<own id>`.
    #[uniffi(default = [])]
    pub relays: Vec<String>,
    /// Also serve as a relay for peers (off by default: a phone should not carry others'
    /// traffic unless the app asks).
    #[uniffi(default = false)]
    pub serve_relay: bool,
    /// Who may register through the client API.
    pub registration: RegistrationMode,
    /// A `tracing` filter such as `info,neurite_core=debug`, applied to the log sink set with
    /// [`crate::set_log_sink`] when this homeserver is created. `None` keeps the sink's filter.
    pub log_filter: Option<String>,
    /// What the node spends on other peers' federation traffic; `None` keeps the defaults,
    /// which suit a phone.
    #[uniffi(default = None)]
    pub federation_limits: Option<FederationLimits>,
}

/// Bounds on what peers may make the node spend (see [`neurite_core::FederationLimits`],
/// whose defaults [`default_federation_limits`] returns). Every field must be at least 1.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FederationLimits {
    /// Open libp2p connections, in total.
    pub max_connections: u32,
    /// Open libp2p connections with one peer.
    pub max_connections_per_peer: u32,
    /// Incoming connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Streams open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Federation requests served at once for one peer.
    pub max_requests_per_peer: u32,
    /// Federation requests served at once, in total.
    pub max_requests: u32,
    /// Request bodies held in memory at once, in bytes, across all peers.
    pub max_body_bytes_in_flight: u64,
    /// Seconds a peer has to send a request's line and headers.
    pub header_read_timeout_secs: u32,
    /// Seconds one federation stream may last.
    pub request_timeout_secs: u32,
    /// Peers held in the address book.
    pub max_known_peers: u32,
}

/// The federation limits a node uses unless told otherwise.
#[uniffi::export]
pub(crate) fn default_federation_limits() -> FederationLimits {
    let d = neurite_core::FederationLimits::default();
    FederationLimits {
        max_connections: d.max_connections,
        max_connections_per_peer: d.max_connections_per_peer,
        max_pending_incoming: d.max_pending_incoming,
        max_streams_per_connection: u32::try_from(d.max_streams_per_connection).unwrap_or(u32::MAX),
        max_requests_per_peer: u32::try_from(d.max_requests_per_peer).unwrap_or(u32::MAX),
        max_requests: u32::try_from(d.max_requests).unwrap_or(u32::MAX),
        max_body_bytes_in_flight: d.max_body_bytes_in_flight as u64,
        header_read_timeout_secs: u32::try_from(d.header_read_timeout.as_secs())
            .unwrap_or(u32::MAX),
        request_timeout_secs: u32::try_from(d.request_timeout.as_secs()).unwrap_or(u32::MAX),
        max_known_peers: u32::try_from(d.max_known_peers).unwrap_or(u32::MAX),
    }
}

impl FederationLimits {
    fn to_core(&self) -> Result<neurite_core::FederationLimits, NeuriteError> {
        let fields = [
            ("max_connections", u64::from(self.max_connections)),
            (
                "max_connections_per_peer",
                u64::from(self.max_connections_per_peer),
            ),
            ("max_pending_incoming", u64::from(self.max_pending_incoming)),
            (
                "max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            (
                "max_requests_per_peer",
                u64::from(self.max_requests_per_peer),
            ),
            ("max_requests", u64::from(self.max_requests)),
            ("max_body_bytes_in_flight", self.max_body_bytes_in_flight),
            (
                "header_read_timeout_secs",
                u64::from(self.header_read_timeout_secs),
            ),
            ("request_timeout_secs", u64::from(self.request_timeout_secs)),
            ("max_known_peers", u64::from(self.max_known_peers)),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(NeuriteError::invalid_config(format!(
                "federation_limits.{name} must be at least 1"
            )));
        }
        let secs = |s: u32| std::time::Duration::from_secs(u64::from(s));
        Ok(neurite_core::FederationLimits {
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            max_pending_incoming: self.max_pending_incoming,
            max_streams_per_connection: self.max_streams_per_connection as usize,
            max_requests_per_peer: self.max_requests_per_peer as usize,
            max_requests: self.max_requests as usize,
            max_body_bytes_in_flight: usize::try_from(self.max_body_bytes_in_flight)
                .unwrap_or(usize::MAX),
            header_read_timeout: secs(self.header_read_timeout_secs),
            request_timeout: secs(self.request_timeout_secs),
            max_known_peers: self.max_known_peers as usize,
        })
    }
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
        config.relays = self
            .relays
            .iter()
            .map(|a| parse_peer_addr("relays", a))
            .collect::<Result<_, _>>()?;
        config.serve_relay = self.serve_relay;
        if let Some(limits) = &self.federation_limits {
            config.federation_limits = limits.to_core()?;
        }
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
