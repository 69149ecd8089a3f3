//! Node configuration.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Who may create accounts through `POST /register`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegistrationMode {
    /// Nobody through the API; accounts are made with the library or `neurite register`.
    #[default]
    Disabled,
    /// Anyone who can reach the client port (demos and tests only).
    Open,
    /// Whoever presents this registration token (`m.login.registration_token`).
    Token(String),
}

impl std::str::FromStr for RegistrationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disabled" => Ok(Self::Disabled),
            "open" => Ok(Self::Open),
            _ => match s.strip_prefix("token:") {
                Some(token) if token.chars().count() >= MIN_REGISTRATION_TOKEN_LEN => {
                    Ok(Self::Token(token.to_owned()))
                }
                Some(_) => Err(format!(
                    "a registration token needs at least {MIN_REGISTRATION_TOKEN_LEN} characters"
                )),
                None => Err(format!(
                    "unknown registration mode {s:?}: use disabled, open or token:SECRET"
                )),
            },
        }
    }
}

/// The shortest registration token the command line and the library accept: the token is the
/// only thing between any app on the phone and a new account, and guesses are rate limited
/// (see [`RateLimits::registration`]), so 16 characters put guessing out of reach.
pub const MIN_REGISTRATION_TOKEN_LEN: usize = 16;

/// A token bucket: `burst` attempts at once, then one more every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Attempts allowed in a row.
    pub burst: u32,
    /// Time to earn one attempt back.
    pub every: std::time::Duration,
}

impl RateLimit {
    /// A limit nobody reaches (tests and benchmarks that make many accounts).
    pub const UNLIMITED: Self = Self {
        burst: u32::MAX,
        every: std::time::Duration::from_millis(1),
    };
}

/// Limits on what a local app could otherwise repeat as fast as it likes. Each is answered
/// with `429 M_LIMIT_EXCEEDED` and a `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Wrong passwords per user (login, and the `m.login.password` stage of password change
    /// and deactivation); a correct password gives its attempt back.
    pub password_per_user: RateLimit,
    /// Password checks for all users together (each costs an argon2id hash).
    pub password_global: RateLimit,
    /// Registration attempts and registration token checks (including
    /// `/register/m.login.registration_token/validity`), for the whole node.
    pub registration: RateLimit,
}

impl Default for RateLimits {
    fn default() -> Self {
        use std::time::Duration;
        Self {
            password_per_user: RateLimit {
                burst: 10,
                every: Duration::from_secs(30),
            },
            password_global: RateLimit {
                burst: 30,
                every: Duration::from_secs(1),
            },
            registration: RateLimit {
                burst: 10,
                every: Duration::from_secs(30),
            },
        }
    }
}

impl RateLimits {
    /// No limits (tests and benchmarks).
    pub const UNLIMITED: Self = Self {
        password_per_user: RateLimit::UNLIMITED,
        password_global: RateLimit::UNLIMITED,
        registration: RateLimit::UNLIMITED,
    };
}

/// Cost of the argon2id password hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
}

impl PasswordCost {
    /// The OWASP-recommended argon2id setting (19 MiB, 2 passes).
    pub const DEFAULT: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
    };
    /// A deliberately weak setting for tests and benchmarks that create many accounts.
    pub const TESTING: Self = Self {
        memory_kib: 64,
        iterations: 1,
    };
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What peers may make this node hold at once over federation. Keys are free, so each bound
/// is per peer where it can be and in total besides; the defaults fit a phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationLimits {
    /// Open libp2p connections, in total.
    pub max_connections: u32,
    /// Open libp2p connections with one peer.
    pub max_connections_per_peer: u32,
    /// Incoming connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Streams open at once on one connection (yamux).
    pub max_streams_per_connection: usize,
    /// Federation requests served at once for one peer; more are answered
    /// `429 M_LIMIT_EXCEEDED` straight away.
    pub max_requests_per_peer: usize,
    /// Federation requests served at once, in total; past it, a peer holding its fair share
    /// of it (or more) is refused the same way, and one holding less is still served.
    pub max_requests: usize,
    /// Request bodies held in memory at once, in bytes, across all peers; a request waits
    /// for room before its body is read.
    pub max_body_bytes_in_flight: usize,
    /// How long a peer has to send a request's line and headers.
    pub header_read_timeout: Duration,
    /// How long one federation stream may last, from its first byte to the end of the answer.
    pub request_timeout: Duration,
    /// Peers held in the address book; a new one pushes out the least recently useful peer
    /// that the app did not add and that is not connected.
    pub max_known_peers: usize,
}

impl Default for FederationLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_connections_per_peer: 2,
            max_pending_incoming: 16,
            max_streams_per_connection: 64,
            max_requests_per_peer: 16,
            max_requests: 64,
            max_body_bytes_in_flight: 16 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_known_peers: 512,
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the database, the key and media. Created if missing.
    pub data_dir: PathBuf,
    /// Address of the client-server API. Port 0 picks a free port.
    pub client_addr: SocketAddr,
    /// Who may register through the API.
    pub registration: RegistrationMode,
    /// Password hashing cost.
    pub password_cost: PasswordCost,
    /// Largest request body accepted by the client API, in bytes.
    pub max_request_bytes: usize,
    /// Largest media upload accepted, in bytes (`m.upload.size` in the media config).
    pub max_upload_bytes: u64,
    /// Peer-to-peer listen addresses (empty: no peer-to-peer networking).
    pub p2p_listen: Vec<libp2p::Multiaddr>,
    /// Peers to dial at start, as full multiaddrs ending in `/p2p/<peer id>`.
    pub static_peers: Vec<libp2p::Multiaddr>,
    /// Whether to discover peers on the local network with mDNS.
    pub mdns_enabled: bool,
    /// Relays to keep a reservation on, as full multiaddrs ending in `/p2p/<relay id>`, so
    /// that peers on other networks reach this node through them.
    pub relays: Vec<libp2p::Multiaddr>,
    /// Whether this node also serves as a relay for its peers (off by default).
    pub serve_relay: bool,
    /// What the relay service allows, when `serve_relay` is on.
    pub relay_limits: crate::p2p::RelayLimits,
    /// Web origins (`scheme://host[:port]`, exactly as browsers send them) allowed to call the
    /// client API from a page, besides the loopback ones when `cors_allow_loopback` is set.
    /// Requests from any other origin are refused. Native apps send no `Origin` and are not
    /// affected.
    pub cors_origins: Vec<String>,
    /// Whether pages served from `http://localhost`, `http://127.0.0.1` or `http://[::1]` (any
    /// port) may call the client API: a web client bundled with the app and served locally.
    pub cors_allow_loopback: bool,
    /// Rate limits on password checks and registration.
    pub rate_limits: RateLimits,
    /// Most bytes of media one user may have uploaded, in total.
    pub media_quota_per_user: u64,
    /// Most bytes of media all users of the node together may have uploaded.
    pub media_quota_total: u64,
    /// Bounds on what peers may make the node hold at once.
    pub federation_limits: FederationLimits,
}

/// TCP on every IPv4 interface, any free port.
pub fn default_p2p_listen() -> libp2p::Multiaddr {
    libp2p::Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED)
        .with(libp2p::multiaddr::Protocol::Tcp(0))
}

impl Config {
    /// A configuration with defaults: client API on `127.0.0.1:0`, registration disabled,
    /// peer-to-peer on all interfaces (any port), mDNS off.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            registration: RegistrationMode::Disabled,
            password_cost: PasswordCost::DEFAULT,
            max_request_bytes: 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            p2p_listen: vec![default_p2p_listen()],
            static_peers: Vec::new(),
            mdns_enabled: false,
            relays: Vec::new(),
            serve_relay: false,
            relay_limits: crate::p2p::RelayLimits::default(),
            cors_origins: Vec::new(),
            cors_allow_loopback: true,
            rate_limits: RateLimits::default(),
            media_quota_per_user: 1024 * 1024 * 1024,
            media_quota_total: 4 * 1024 * 1024 * 1024,
            federation_limits: FederationLimits::default(),
        }
    }
}
