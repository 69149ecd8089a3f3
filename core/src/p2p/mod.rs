//! The peer-to-peer transport: a libp2p swarm (TCP, Noise, Yamux) with identify, ping,
//! optional mDNS, and a stream protocol that carries federation HTTP.
//!
//! The swarm runs in one task. The rest of the node talks to it through [`P2p`]: opening
//! federation streams, dialling peers, and watching peers come and go.
//!
//! Addresses come from the app and the configuration, mDNS, identify (a peer's own listen
//! addresses) and peer exchange (`/neurite/peers/1`: a connected peer's answer about another
//! one). The swarm keeps none of its own (identify's address cache is off): every dial uses
//! the [`book`], which takes an address only from an origin that may name it and holds a
//! bounded number of peers and addresses (see [`book`] for the policy). Asking peers for
//! addresses is bounded too: a destination is asked about at most once per back-off (30 s,
//! doubling to 30 min, reset once it is reached), of at most [`MAX_HELPERS`] peers, with at
//! most [`MAX_QUESTIONS`] questions out at once; answers hold at most
//! [`book::MAX_ADDRS_PER_PEER`] addresses in [`PEERS_MAX_BYTES`] and give only addresses this
//! node had first hand, never ones a third party told it.
//!
//! This module holds the handle and builds the swarm; the swarm task is in [`driver`], and
//! asking and answering about peer addresses in [`exchange`].
//!
//! Over 600 lines: the handle's methods and the swarm's construction (every behaviour and its
//! limits in one place) are what this file is; what runs in the swarm task lives in
//! [`driver`] and [`circuits`].

pub mod book;
mod circuits;
mod driver;
mod exchange;
pub mod inbound;
pub mod relay;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

pub use libp2p::{Multiaddr, PeerId};
use libp2p::{
    StreamProtocol, connection_limits, dcutr, identify, mdns,
    multiaddr::Protocol,
    noise, ping, relay as circuit,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    tcp, yamux,
};
use tokio::{
    sync::{Semaphore, broadcast, mpsc, oneshot, watch},
    time::Instant,
};

pub use self::relay::RelayLimits;
use self::{
    book::Book,
    circuits::RelaySlot,
    driver::{Driver, Network},
    exchange::{Sought, answer_peer_question, ask_for_peer},
};

use crate::{
    config::FederationLimits,
    error::{Error, Result},
    identity::{Identity, server_name_for_peer},
    tasks::Tasks,
};

/// The stream protocol federation requests travel on.
pub const FEDERATION_PROTOCOL: StreamProtocol = StreamProtocol::new("/neurite/federation/1");

/// The stream protocol a node asks its peers on for another peer's addresses.
pub const PEERS_PROTOCOL: StreamProtocol = StreamProtocol::new("/neurite/peers/1");

/// Longest a peer-address question may take.
const PEERS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read of a peer-address question or answer.
pub const PEERS_MAX_BYTES: u64 = 16 * 1024;
/// Most addresses given or taken for one peer.
const PEERS_MAX_ADDRS: usize = book::MAX_ADDRS_PER_PEER;
/// Most connected peers asked about one destination at a time.
pub const MAX_HELPERS: usize = 8;
/// Most peer-address questions out at once, for all destinations together.
pub const MAX_QUESTIONS: usize = 16;
/// Most peer-address questions from other peers answered at once; more are closed unanswered.
const MAX_ANSWERS: usize = 8;
/// Most inbound federation streams waiting to be taken by the server (see [`inbound`]).
const FEDERATION_QUEUE: usize = 256;

/// A connection with no open streams is closed after this long. Peers reconnect on demand.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How often an open connection is pinged. Besides noticing a dead peer, this is what keeps
/// a relay reservation's connection (and the NAT mapping under it) alive while idle: the one
/// idle traffic a phone with a relay sends.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// The identify protocol version every Neurite node (and relay) announces.
const IDENTIFY_PROTOCOL: &str = "/neurite/1";
/// The identify agent of a relay-only node.
const RELAY_AGENT: &str = concat!("neurite-relay/", env!("CARGO_PKG_VERSION"));
/// How often AutoNAT may test one of this node's address candidates with a server. A
/// candidate behind a NAT that drops the server's dial-back is asked about again each time
/// (the server's answer times out rather than saying "unreachable"), so this is also the
/// period of that small request on a phone behind a NAT.
const AUTONAT_PROBE_INTERVAL: Duration = Duration::from_secs(120);
/// Most candidate addresses AutoNAT keeps to test.
const AUTONAT_MAX_CANDIDATES: usize = 8;

/// How a peer became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discovery {
    /// Given as a static peer or added by the app.
    Static,
    /// Found by mDNS on the local network.
    Mdns,
    /// Connected to us first.
    Inbound,
    /// Learnt from another peer (peer exchange).
    Exchange,
    /// A relay this node keeps a reservation on (given in the configuration).
    Relay,
}

/// How a connected peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Over a connection of its own (same network, a public address, or a hole punched
    /// through both NATs).
    Direct,
    /// Only through a relay's circuit.
    Relayed,
}

impl Path {
    /// A stable name for display (`direct`, `relayed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        }
    }
}

/// What the node knows about a peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Peer id.
    pub peer_id: PeerId,
    /// The peer's Matrix server name, if it is a Neurite node.
    pub server_name: Option<String>,
    /// Known addresses.
    pub addresses: Vec<Multiaddr>,
    /// Whether a connection is open.
    pub connected: bool,
    /// How it was found.
    pub discovered: Discovery,
    /// How it is reached while connected (`None` when not connected).
    pub path: Option<Path>,
}

/// A change in connectivity.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// The first connection to a peer opened, over this path.
    Connected(PeerId, Path),
    /// The path to a connected peer changed: a relayed connection was upgraded to a direct
    /// one (hole punching), or the direct one closed while a relayed one stayed.
    PathChanged(PeerId, Path),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
}

/// Transport settings.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (full multiaddrs ending in `/p2p/<peer id>`).
    pub static_peers: Vec<Multiaddr>,
    /// Whether to discover peers with mDNS.
    pub mdns: bool,
    /// Peers remembered from earlier runs (full multiaddrs, and how each was found),
    /// redialled at start.
    pub remembered: Vec<(Multiaddr, Discovery)>,
    /// Receives every address the address book takes, for the persistent address book. A
    /// bounded channel: when it is full (a peer announcing addresses faster than they are
    /// written), the address is kept in memory only.
    pub learned: Option<mpsc::Sender<(PeerId, Multiaddr, Discovery)>>,
    /// Connection and stream bounds.
    pub limits: FederationLimits,
    /// Relays to keep a reservation on, each a full multiaddr ending in `/p2p/<relay id>`:
    /// peers on other networks reach this node at `<relay>/p2p-circuit/p2p/<own id>`.
    pub relays: Vec<Multiaddr>,
    /// Whether this node also serves as a relay for its peers (off by default: a phone does
    /// not carry others' traffic unless the app asks), within `relay_limits`.
    pub serve_relay: bool,
    /// The limits of the relay service, when `serve_relay` is on.
    pub relay_limits: RelayLimits,
}

impl Discovery {
    /// The discovery [`Discovery::as_str`] names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "static" => Some(Discovery::Static),
            "mdns" => Some(Discovery::Mdns),
            "inbound" => Some(Discovery::Inbound),
            "exchange" => Some(Discovery::Exchange),
            "relay" => Some(Discovery::Relay),
            _ => None,
        }
    }

    /// A stable name for storage and display.
    pub fn as_str(self) -> &'static str {
        match self {
            Discovery::Static => "static",
            Discovery::Mdns => "mdns",
            Discovery::Inbound => "inbound",
            Discovery::Exchange => "exchange",
            Discovery::Relay => "relay",
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    /// Reservations on relays, and circuits through them (both ways).
    relay_client: circuit::client::Behaviour,
    /// Hole punching on relayed connections (DCUtR).
    dcutr: dcutr::Behaviour,
    /// Whether this node's observed addresses are reachable from outside (AutoNAT v2).
    autonat: libp2p_autonat::v2::client::Behaviour,
    /// The relay service, when this node serves as one.
    relay_server: Toggle<circuit::Behaviour>,
    /// Tests other nodes' addresses for them, when this node serves as a relay.
    autonat_server: Toggle<libp2p_autonat::v2::server::Behaviour>,
    /// Outbound streams of every protocol.
    stream: libp2p_stream::Behaviour,
    /// Inbound federation streams.
    federation: inbound::Behaviour,
    /// Inbound peer-address questions.
    questions: inbound::Behaviour,
}

enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    SetEnabled(bool, oneshot::Sender<Result<(), String>>),
    /// The first-hand addresses of a peer, to answer another peer's question.
    Addresses(PeerId, oneshot::Sender<Vec<Multiaddr>>),
    /// What helpers answered about a peer; replies with the addresses the book took.
    Learn(
        PeerId,
        Vec<(PeerId, Vec<Multiaddr>)>,
        oneshot::Sender<Vec<Multiaddr>>,
    ),
    DialKnown(PeerId, oneshot::Sender<bool>),
}

/// Handle to the running swarm. Cheap to clone.
#[derive(Clone)]
pub struct P2p {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    /// How many addresses the node listens on while its network is on.
    listen_count: usize,
    events: broadcast::Sender<PeerEvent>,
    /// Peers with an open connection (kept by the swarm task).
    connected: Arc<Mutex<HashSet<PeerId>>>,
    sought: Arc<Mutex<Sought>>,
    /// Places for peer-address questions out at once.
    questions: Arc<Semaphore>,
    /// Inbound federation streams, until the server takes them.
    federation_streams: Arc<Mutex<Option<inbound::Incoming>>>,
    /// The node's tasks: the swarm and what serves it run among them.
    tasks: Tasks,
    /// The peer ids of the relays this node keeps a reservation on.
    relays: Arc<[PeerId]>,
}

/// The peer id at the end of a multiaddr (`/p2p/<id>`), if any: for a circuit address
/// (`…/p2p/<relay>/p2p-circuit/p2p/<id>`), the peer reached through the relay.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last()? {
        Protocol::P2p(id) => Some(id),
        _ => None,
    }
}

impl P2p {
    /// Builds the swarm, starts listening, dials static peers, and runs it as one of `tasks`
    /// until they stop. The swarm, its listeners and its connections are closed once `tasks`
    /// have ended.
    pub async fn start(identity: &Identity, config: P2pConfig, tasks: &Tasks) -> Result<Self> {
        let keypair = identity.libp2p_keypair()?;
        let peer_id = keypair.public().to_peer_id();
        let mdns_on = config.mdns;
        let limits = &config.limits;
        let max_streams = limits.max_streams_per_connection;
        let connection_limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(limits.max_connections))
            .with_max_established_per_peer(Some(limits.max_connections_per_peer))
            .with_max_pending_incoming(Some(limits.max_pending_incoming));
        let builder = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                move || {
                    let mut yamux = yamux::Config::default();
                    yamux.set_max_num_streams(max_streams);
                    yamux
                },
            )
            .map_err(|e| Error::Network(e.to_string()))?;
        // QUIC (`/udp/<port>/quic-v1` addresses) when built with the `quic` feature.
        #[cfg(feature = "quic")]
        let builder = builder.with_quic();
        let builder = builder
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| Error::Network(e.to_string()))?;
        let (federation, federation_streams) =
            inbound::Behaviour::new(FEDERATION_PROTOCOL, FEDERATION_QUEUE);
        let (questions, mut asked) = inbound::Behaviour::new(PEERS_PROTOCOL, MAX_ANSWERS);
        let serve_relay = config.serve_relay;
        let relay_config = config.relay_limits.relay_config();
        let mut swarm = builder
            .with_behaviour(|key, relay_client| {
                let local = key.public().to_peer_id();
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
                } else {
                    None
                };
                let autonat = libp2p_autonat::v2::client::Config::default()
                    .with_probe_interval(AUTONAT_PROBE_INTERVAL)
                    .with_max_candidates(AUTONAT_MAX_CANDIDATES);
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(connection_limits),
                    // No cache: the swarm dials only what the address book gives it.
                    identify: identify::Behaviour::new(
                        identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                            .with_cache_size(0),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
                    mdns: Toggle::from(mdns),
                    relay_client,
                    dcutr: dcutr::Behaviour::new(local),
                    autonat: libp2p_autonat::v2::client::Behaviour::new(
                        rand::make_rng::<rand::rngs::StdRng>(),
                        autonat,
                    ),
                    relay_server: Toggle::from(
                        serve_relay.then(|| circuit::Behaviour::new(local, relay_config)),
                    ),
                    autonat_server: Toggle::from(
                        serve_relay.then(libp2p_autonat::v2::server::Behaviour::default),
                    ),
                    stream: libp2p_stream::Behaviour::new(),
                    federation,
                    questions,
                })
            })
            .map_err(|e| Error::Network(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build();
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Network(format!("listen on {addr}: {e}")))?;
            listeners.push(id);
        }
        let control = swarm.behaviour().stream.new_control();
        let (commands, command_rx) = mpsc::channel(32);
        let (addr_tx, listen_addrs) = watch::channel(Vec::new());
        let (events, _) = broadcast::channel(64);
        let shared_connected = Arc::new(Mutex::new(HashSet::new()));
        let driver = Driver {
            swarm,
            commands: command_rx,
            listen_addrs: addr_tx,
            events: events.clone(),
            book: Book::new(limits.max_known_peers),
            connected: HashSet::new(),
            shared_connected: shared_connected.clone(),
            connections: HashMap::new(),
            relays: config
                .relays
                .iter()
                .filter_map(|addr| {
                    let slot = RelaySlot::new(addr.clone());
                    if slot.is_none() {
                        tracing::warn!(%addr, "relay address does not end in /p2p/<relay id>");
                    }
                    slot
                })
                .collect(),
            serve_relay,
            superseded: Vec::new(),
            after_relay: Vec::new(),
            learned: config.learned.clone(),
            dial_waiters: HashMap::new(),
            network: Network {
                enabled: true,
                listen: config.listen.clone(),
                listeners,
                mdns: mdns_on,
                redial: Vec::new(),
            },
        };
        let answer_commands = commands.clone();
        let answers = Arc::new(Semaphore::new(MAX_ANSWERS));
        let answering = tasks.clone();
        tasks.spawn(async move {
            while let Some((from, stream)) = asked.recv().await {
                let Ok(place) = answers.clone().try_acquire_owned() else {
                    tracing::debug!(peer = %from, "peer-address question dropped: too many");
                    continue;
                };
                let commands = answer_commands.clone();
                answering.spawn(async move {
                    let _place = place;
                    let answer = answer_peer_question(stream, &commands);
                    if tokio::time::timeout(PEERS_TIMEOUT, answer).await.is_err() {
                        tracing::debug!(peer = %from, "peer-address question timed out");
                    }
                });
            }
        });
        // The driver leaves its loop when the node stops, and drops the swarm.
        let first_dials = driver::FirstDials {
            remembered: config.remembered.clone(),
            static_peers: config.static_peers.clone(),
        };
        tasks.spawn_draining(driver.run(tasks.clone(), first_dials));
        let p2p = Self {
            peer_id,
            control,
            commands,
            listen_addrs,
            listen_count: config.listen.len(),
            events,
            connected: shared_connected,
            sought: Arc::new(Mutex::new(Sought::default())),
            questions: Arc::new(Semaphore::new(MAX_QUESTIONS)),
            federation_streams: Arc::new(Mutex::new(Some(federation_streams))),
            tasks: tasks.clone(),
            relays: config.relays.iter().filter_map(peer_of).collect(),
        };
        p2p.wait_for_listeners().await;
        Ok(p2p)
    }

    /// Waits (at most 5 s) until the node listens on an address, if it has any to listen on.
    async fn wait_for_listeners(&self) {
        let expected = self.listen_count.min(1);
        let mut rx = self.listen_addrs.clone();
        let wait = rx.wait_for(|addrs| addrs.len() >= expected);
        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    }

    /// The node's tasks, for work that serves the swarm's streams.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The Matrix server name of `peer`, unless it is one of this node's relays (a relay is
    /// not a homeserver).
    pub fn server_name_of(&self, peer: &PeerId) -> Option<String> {
        if self.relays.contains(peer) {
            None
        } else {
            server_name_for_peer(peer)
        }
    }

    /// The addresses this node tells others about, each ending in `/p2p/<peer id>`: where it
    /// listens directly first, then its relay circuits, then external addresses AutoNAT
    /// confirmed.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .borrow()
            .iter()
            .map(|a| a.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a))
            .collect()
    }

    /// The addresses this node tells others about (as [`P2p::listen_addrs`] gives them, but
    /// without `/p2p/<peer id>`), changing as listeners, relay reservations and confirmed
    /// external addresses come and go.
    pub fn watch_addrs(&self) -> watch::Receiver<Vec<Multiaddr>> {
        self.listen_addrs.clone()
    }

    /// The inbound federation streams, for the one server that serves them (`None` once
    /// taken).
    pub fn take_federation_streams(&self) -> Option<inbound::Incoming> {
        self.federation_streams.lock().ok()?.take()
    }

    /// A control for opening federation streams.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Dials a peer at a full multiaddr and remembers it as a static peer.
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<()> {
        if peer_of(&addr).is_none() {
            return Err(Error::Network(format!(
                "{addr} does not end in /p2p/<peer id>"
            )));
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial(addr, tx))
            .await
            .map_err(|_| Error::Network("the network is stopped".into()))?;
        rx.await
            .map_err(|_| Error::Network("the network is stopped".into()))?
            .map_err(Error::Network)
    }

    /// Every peer the node knows of (none once the network task has stopped).
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.try_peers().await.unwrap_or_default()
    }

    /// Every peer the node knows of; fails once the network task has stopped, for callers
    /// that must tell that apart from knowing no peer.
    pub async fn try_peers(&self) -> Result<Vec<PeerInfo>> {
        let stopped = || Error::Network("the network is stopped".into());
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Peers(tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Turns the network off or back on, for an app going to the background and back.
    ///
    /// Off: listeners close, mDNS stops, every connection is closed and no new one is made
    /// (federation requests fail and stay in the outbox). On: listen again on the configured
    /// addresses (a port picked at random may differ from before), restart mDNS if it was
    /// configured, and redial every known peer; the usual catch-up runs as they connect.
    /// Switched on, it returns once [`P2p::listen_addrs`] has the new addresses (as
    /// [`P2p::start`] does, waiting at most 5 s for them).
    pub async fn set_enabled(&self, enabled: bool) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetEnabled(enabled, tx))
            .await
            .map_err(|_| Error::Network("the network is stopped".into()))?;
        rx.await
            .map_err(|_| Error::Network("the network is stopped".into()))?
            .map_err(Error::Network)?;
        if enabled {
            self.wait_for_listeners().await;
        }
        Ok(())
    }

    /// Whether a connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected
            .lock()
            .map(|c| c.contains(peer))
            .unwrap_or(false)
    }

    /// Connects to `peer` if it can: first at the addresses this node knows, then at
    /// addresses its connected peers know (see [`P2p::find_peer`]). Returns whether a
    /// connection is open.
    pub async fn reach(&self, peer: PeerId) -> bool {
        let reached = self.dial_and_wait(peer).await
            || (!self.find_peer(peer).await.is_empty() && self.dial_and_wait(peer).await);
        if reached && let Ok(mut sought) = self.sought.lock() {
            sought.reached(&peer);
        }
        reached
    }

    /// Dials `peer` at its known addresses and waits (bounded) until that connects or fails.
    async fn dial_and_wait(&self, peer: PeerId) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::DialKnown(peer, tx))
            .await
            .is_err()
        {
            return false;
        }
        matches!(tokio::time::timeout(PEERS_TIMEOUT, rx).await, Ok(Ok(true)))
    }

    /// Asks connected peers (at most [`MAX_HELPERS`]) for addresses of `peer` (peer exchange)
    /// and dials it at those the address book takes. Returns those addresses.
    ///
    /// A destination is asked about at most once per back-off, which grows from 30 s to
    /// 30 min while it stays out of reach; at most [`MAX_QUESTIONS`] questions are out at
    /// once for all destinations.
    pub async fn find_peer(&self, peer: PeerId) -> Vec<Multiaddr> {
        let may_ask = self
            .sought
            .lock()
            .map(|mut s| s.may_ask(peer, Instant::now()))
            .unwrap_or(false);
        if !may_ask {
            return Vec::new();
        }
        // Helpers are picked at random: keys are free, so peers whose ids sort first must
        // not be the only ones asked.
        let mut helpers: Vec<(u64, PeerId)> = self
            .peers()
            .await
            .into_iter()
            .filter(|p| p.connected && p.peer_id != peer)
            .map(|p| {
                let mut key = [0u8; 8];
                let _ = getrandom::fill(&mut key);
                (u64::from_le_bytes(key), p.peer_id)
            })
            .collect();
        helpers.sort_unstable_by_key(|(key, _)| *key);
        let helpers: Vec<PeerId> = helpers
            .into_iter()
            .map(|(_, p)| p)
            .take(MAX_HELPERS)
            .collect();
        let asks = helpers.into_iter().filter_map(|helper| {
            let place = self.questions.clone().try_acquire_owned().ok()?;
            let mut control = self.control.clone();
            Some(async move {
                let _place = place;
                let ask = ask_for_peer(&mut control, helper, peer);
                let addrs = match tokio::time::timeout(PEERS_TIMEOUT, ask).await {
                    Ok(Ok(addrs)) => addrs,
                    Ok(Err(e)) => {
                        tracing::debug!(%helper, error = %e, "peer-address question failed");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                };
                (helper, addrs)
            })
        });
        let answers: Vec<(PeerId, Vec<Multiaddr>)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|(_, addrs)| !addrs.is_empty())
            .collect();
        if answers.is_empty() {
            return Vec::new();
        }
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Learn(peer, answers, tx))
            .await
            .is_err()
        {
            return Vec::new();
        }
        let found = rx.await.unwrap_or_default();
        if !found.is_empty() {
            tracing::info!(%peer, addresses = found.len(), "learnt addresses from peers");
        }
        found
    }

    /// Connectivity changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }
}
