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

pub mod book;
pub mod inbound;
pub mod relay;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
pub use libp2p::{Multiaddr, PeerId};
use libp2p::{
    StreamProtocol, Swarm, connection_limits, dcutr, identify, mdns,
    multiaddr::Protocol,
    noise, ping, relay as circuit,
    swarm::{ConnectionId, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle},
    tcp, yamux,
};
use tokio::{
    sync::{Semaphore, broadcast, mpsc, oneshot, watch},
    time::Instant,
};

use self::book::{Book, Origin, Scope, admit};
pub use self::relay::RelayLimits;

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
/// Most destinations whose back-off is remembered; past it, no new destination is asked about
/// until one's back-off is over.
const MAX_SOUGHT: usize = 256;
/// The first wait before a destination is asked about again.
const ASK_BACKOFF_MIN: Duration = Duration::from_secs(30);
/// The longest wait before a destination is asked about again.
const ASK_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
/// Most peers redialled when the network comes back on.
const MAX_REDIAL: usize = 32;
/// Most inbound federation streams waiting to be taken by the server (see [`inbound`]).
const FEDERATION_QUEUE: usize = 256;
/// Most listen addresses of one identify message looked at.
const IDENTIFY_MAX_ADDRS: usize = 64;

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
/// The first wait before a lost or refused relay reservation is asked for again.
const RESERVE_BACKOFF_MIN: Duration = Duration::from_secs(5);
/// The longest wait between attempts at a relay reservation.
const RESERVE_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Most dials waiting for a relay's connection (see `Driver::defer_for_relay`).
const MAX_AFTER_RELAY: usize = 64;
/// How long a relayed connection stays open once a direct one to the same peer is up: long
/// enough for the peer to see the direct connection too before the relayed one goes, so
/// neither side sees the peer leave and come back.
const RELAYED_GRACE: Duration = Duration::from_secs(2);
/// How often AutoNAT may test one of this node's address candidates with a server.
const AUTONAT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
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

/// When each destination may be asked about again ([`P2p::find_peer`]).
#[derive(Default)]
struct Sought {
    /// Per destination: not before this instant, and the wait after that.
    next: HashMap<PeerId, (Instant, Duration)>,
}

impl Sought {
    /// Whether `peer` may be asked about at `now`; if so, the next time is pushed back.
    fn may_ask(&mut self, peer: PeerId, now: Instant) -> bool {
        if let Some((not_before, _)) = self.next.get(&peer)
            && *not_before > now
        {
            return false;
        }
        if !self.next.contains_key(&peer) && self.next.len() >= MAX_SOUGHT {
            self.next.retain(|_, (not_before, _)| *not_before > now);
            if self.next.len() >= MAX_SOUGHT {
                return false;
            }
        }
        let wait = self
            .next
            .get(&peer)
            .map_or(ASK_BACKOFF_MIN, |(_, w)| *w)
            .min(ASK_BACKOFF_MAX);
        self.next
            .insert(peer, (now + wait, (wait * 2).min(ASK_BACKOFF_MAX)));
        true
    }

    /// `peer` was reached: the next time it is lost, it may be asked about at once.
    fn reached(&mut self, peer: &PeerId) {
        self.next.remove(peer);
    }
}

/// Handle to the running swarm. Cheap to clone.
#[derive(Clone)]
pub struct P2p {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
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
        let mut driver = Driver {
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
        driver.reserve_all();
        driver.redial_remembered(&config.remembered);
        for addr in &config.static_peers {
            if let Err(e) = driver.dial(addr.clone()) {
                tracing::warn!(error = %e, "static peer not dialled");
            }
        }
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
        tasks.spawn_draining(driver.run(tasks.clone()));
        let p2p = Self {
            peer_id,
            control,
            commands,
            listen_addrs,
            events,
            connected: shared_connected,
            sought: Arc::new(Mutex::new(Sought::default())),
            questions: Arc::new(Semaphore::new(MAX_QUESTIONS)),
            federation_streams: Arc::new(Mutex::new(Some(federation_streams))),
            tasks: tasks.clone(),
        };
        p2p.wait_for_listeners(config.listen.len()).await;
        Ok(p2p)
    }

    async fn wait_for_listeners(&self, expected: usize) {
        let mut rx = self.listen_addrs.clone();
        let wait = rx.wait_for(|addrs| addrs.len() >= expected.min(1));
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

    /// Every peer the node knows of.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Peers(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Turns the network off or back on, for an app going to the background and back.
    ///
    /// Off: listeners close, mDNS stops, every connection is closed and no new one is made
    /// (federation requests fail and stay in the outbox). On: listen again on the configured
    /// addresses (a port picked at random may differ from before), restart mDNS if it was
    /// configured, and redial every known peer; the usual catch-up runs as they connect.
    pub async fn set_enabled(&self, enabled: bool) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetEnabled(enabled, tx))
            .await
            .map_err(|_| Error::Network("the network is stopped".into()))?;
        rx.await
            .map_err(|_| Error::Network("the network is stopped".into()))?
            .map_err(Error::Network)
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

/// What [`P2p::set_enabled`] needs to switch the network off and on again.
struct Network {
    enabled: bool,
    listen: Vec<Multiaddr>,
    listeners: Vec<libp2p::core::transport::ListenerId>,
    mdns: bool,
    /// The peers connected when the network went off, redialled when it comes back.
    redial: Vec<PeerId>,
}

/// A relay this node keeps a reservation on.
struct RelaySlot {
    /// The relay's address, ending in `/p2p/<relay id>`.
    addr: Multiaddr,
    /// The relay's peer id.
    peer: PeerId,
    /// The listener that holds the reservation, while one is asked for or held.
    listener: Option<libp2p::core::transport::ListenerId>,
    /// When to ask again, after the reservation was refused or lost.
    retry_at: Option<Instant>,
    /// The wait before the next attempt after this one fails.
    backoff: Duration,
}

impl RelaySlot {
    fn new(addr: Multiaddr) -> Option<Self> {
        let peer = peer_of(&addr)?;
        Some(Self {
            addr,
            peer,
            listener: None,
            retry_at: None,
            backoff: RESERVE_BACKOFF_MIN,
        })
    }
}

struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    listen_addrs: watch::Sender<Vec<Multiaddr>>,
    events: broadcast::Sender<PeerEvent>,
    book: Book,
    connected: HashSet<PeerId>,
    /// [`Driver::connected`] as [`P2p::is_connected`] reads it.
    shared_connected: Arc<Mutex<HashSet<PeerId>>>,
    /// Every open connection: its peer, the scope of its remote address (`None` when that is
    /// not an IP address; a relayed connection has its relay's) and whether it is relayed.
    connections: HashMap<ConnectionId, (PeerId, Option<Scope>, bool)>,
    /// The relays this node keeps a reservation on.
    relays: Vec<RelaySlot>,
    /// Whether this node serves as a relay (its listen addresses are then its external ones).
    serve_relay: bool,
    /// Relayed connections to close, each once its peer has had a direct connection for
    /// [`RELAYED_GRACE`].
    superseded: Vec<(Instant, ConnectionId)>,
    /// Peers to dial once a relay is connected: (relay, peer).
    after_relay: Vec<(PeerId, PeerId)>,
    learned: Option<mpsc::Sender<(PeerId, Multiaddr, Discovery)>>,
    /// Who waits for the outcome of a dial to a peer: `true` once connected, `false` if it
    /// failed.
    dial_waiters: HashMap<PeerId, Vec<oneshot::Sender<bool>>>,
    network: Network,
}

impl Driver {
    fn set_enabled(&mut self, enabled: bool) -> Result<(), String> {
        if enabled == self.network.enabled {
            return Ok(());
        }
        self.network.enabled = enabled;
        if !enabled {
            for id in self.network.listeners.drain(..) {
                self.swarm.remove_listener(id);
            }
            for slot in &mut self.relays {
                if let Some(id) = slot.listener.take() {
                    self.swarm.remove_listener(id);
                }
                slot.retry_at = None;
                slot.backoff = RESERVE_BACKOFF_MIN;
            }
            let external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
            for addr in external {
                self.swarm.remove_external_address(&addr);
            }
            self.listen_addrs.send_modify(Vec::clear);
            self.swarm.behaviour_mut().mdns = Toggle::from(None);
            let connected: Vec<PeerId> = self.connected.iter().copied().collect();
            self.network.redial = connected.clone();
            for peer in connected {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            tracing::info!("p2p network disabled");
            return Ok(());
        }
        for addr in self.network.listen.clone() {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| format!("listen on {addr}: {e}"))?;
            self.network.listeners.push(id);
        }
        if self.network.mdns {
            let local = *self.swarm.local_peer_id();
            let mdns = mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                .map_err(|e| format!("mdns: {e}"))?;
            self.swarm.behaviour_mut().mdns = Toggle::from(Some(mdns));
        }
        self.reserve_all();
        // The peers that were connected, then those the app gave, up to a bound: not every
        // peer the book holds.
        let mut redial = std::mem::take(&mut self.network.redial);
        let explicit = self
            .book
            .iter()
            .filter(|(p, e)| e.explicit && !redial.contains(p))
            .map(|(p, _)| *p)
            .collect::<Vec<_>>();
        redial.extend(explicit);
        for peer in redial.into_iter().take(MAX_REDIAL) {
            self.dial_known(peer, None);
        }
        tracing::info!("p2p network enabled");
        Ok(())
    }

    /// Takes `addr`, an address of `peer` from `origin`, into the book if that origin may
    /// name it; reports a new one to the persistent address book. Returns the address as
    /// kept, if taken.
    fn remember(
        &mut self,
        peer: PeerId,
        addr: &Multiaddr,
        origin: Origin,
        discovered: Discovery,
    ) -> Option<Multiaddr> {
        if peer == *self.swarm.local_peer_id() {
            return None;
        }
        let Some(bare) = admit(peer, addr, origin) else {
            tracing::debug!(%peer, %addr, ?origin, "address not taken");
            return None;
        };
        if self
            .book
            .add(peer, bare.clone(), origin, discovered, &self.connected)
            && let Some(tx) = &self.learned
            && let Some(entry) = self.book.get(&peer)
        {
            let _ = tx.try_send((peer, bare.clone(), entry.discovered));
        }
        self.book
            .get(&peer)
            .is_some_and(|e| e.addresses().contains(&bare))
            .then_some(bare)
    }

    /// Dials an address the app or the configuration gave (ending in `/p2p/<peer id>`).
    fn dial(&mut self, addr: Multiaddr) -> Result<(), String> {
        let Some(peer) = peer_of(&addr) else {
            return Err(format!("{addr} does not end in /p2p/<peer id>"));
        };
        if peer == *self.swarm.local_peer_id() {
            return Err("that is this node's own address".into());
        }
        let Some(bare) = self.remember(peer, &addr, Origin::Explicit, Discovery::Static) else {
            return Err(format!("{addr} is not an address this node can dial"));
        };
        if self.defer_for_relay(peer, std::slice::from_ref(&bare)) {
            return Ok(());
        }
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
            .addresses(vec![bare])
            .build();
        self.swarm
            .dial(opts)
            .map_err(|e| format!("dial {addr}: {e}"))
    }

    /// Whether a dial of `peer` at `addrs` waits for one of this node's relays: when an
    /// address goes through a relay whose reservation is being asked for, the dial starts once
    /// that relay is connected (or its reservation failed). Dialling it at the same time
    /// would race the reservation's own connection to the relay, and one of the two would be
    /// dropped.
    fn defer_for_relay(&mut self, peer: PeerId, addrs: &[Multiaddr]) -> bool {
        let waiting = addrs.iter().find_map(|a| {
            let relay = relay_of(a)?;
            let pending = self
                .relays
                .iter()
                .any(|s| s.peer == relay && s.listener.is_some());
            (pending && !self.connected.contains(&relay)).then_some(relay)
        });
        let Some(relay) = waiting else {
            return false;
        };
        if self.after_relay.len() >= MAX_AFTER_RELAY {
            return false;
        }
        if !self.after_relay.contains(&(relay, peer)) {
            self.after_relay.push((relay, peer));
        }
        true
    }

    /// Dials the peers that waited for `relay` (see [`Driver::defer_for_relay`]).
    fn dial_after_relay(&mut self, relay: PeerId) {
        let (ready, wait): (Vec<_>, Vec<_>) =
            self.after_relay.drain(..).partition(|(r, _)| *r == relay);
        self.after_relay = wait;
        for (_, peer) in ready {
            self.dial_known(peer, None);
        }
    }

    /// Puts the peers of an earlier run back in the book and dials each once.
    fn redial_remembered(&mut self, remembered: &[(Multiaddr, Discovery)]) {
        let mut peers = Vec::new();
        for (addr, discovered) in remembered {
            let Some(peer) = peer_of(addr) else { continue };
            let origin = if *discovered == Discovery::Static {
                Origin::Explicit
            } else {
                Origin::Remembered
            };
            if self.remember(peer, addr, origin, *discovered).is_some() && !peers.contains(&peer) {
                peers.push(peer);
            }
        }
        for peer in peers {
            self.dial_known(peer, None);
        }
    }

    /// Dials `peer` at the addresses known for it. `reply`, if given, hears whether that
    /// ends in a connection (at once if one is open or no dial can start).
    fn dial_known(&mut self, peer: PeerId, reply: Option<oneshot::Sender<bool>>) {
        let answer = |reply: Option<oneshot::Sender<bool>>, connected| {
            if let Some(r) = reply {
                let _ = r.send(connected);
            }
        };
        if self.connected.contains(&peer) {
            return answer(reply, true);
        }
        if !self.network.enabled {
            return answer(reply, false);
        }
        let addrs = match self.book.get(&peer) {
            Some(k) if !k.addresses().is_empty() => k.addresses(),
            _ => return answer(reply, false),
        };
        if reply.is_none() && self.defer_for_relay(peer, &addrs) {
            return;
        }
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs)
            .build();
        match self.swarm.dial(opts) {
            // A dial already under way ends the same way for this caller.
            Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                if let Some(r) = reply {
                    self.dial_waiters.entry(peer).or_default().push(r);
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "dial failed");
                answer(reply, false);
            }
        }
    }

    /// Asks every relay without a reservation for one.
    fn reserve_all(&mut self) {
        for i in 0..self.relays.len() {
            if self.relays[i].listener.is_none() {
                self.reserve(i);
            }
        }
    }

    /// Asks relay `i` for a reservation: listening on its circuit address dials it if need
    /// be, and the reservation's address becomes one of this node's listen addresses.
    fn reserve(&mut self, i: usize) {
        if !self.network.enabled {
            return;
        }
        let slot = &mut self.relays[i];
        slot.retry_at = None;
        let circuit = slot.addr.clone().with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit) {
            Ok(id) => slot.listener = Some(id),
            Err(e) => {
                tracing::warn!(relay = %slot.addr, error = %e, "cannot ask for a reservation");
                slot.retry_at = Some(Instant::now() + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(RESERVE_BACKOFF_MAX);
            }
        }
    }

    /// A listener closed: if it held a relay reservation, ask again after a back-off, and
    /// dial whoever waited for that relay (at their other addresses, or through the relay
    /// once connected to it again).
    fn listener_closed(&mut self, id: libp2p::core::transport::ListenerId, reason: String) {
        let enabled = self.network.enabled;
        let mut waited_for = None;
        if let Some(slot) = self.relays.iter_mut().find(|s| s.listener == Some(id)) {
            slot.listener = None;
            waited_for = Some(slot.peer);
            if enabled {
                tracing::info!(
                    relay = %slot.addr,
                    reason,
                    retry_in = ?slot.backoff,
                    "relay reservation lost"
                );
                slot.retry_at = Some(Instant::now() + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(RESERVE_BACKOFF_MAX);
            }
        }
        if let Some(relay) = waited_for {
            self.dial_after_relay(relay);
        }
        self.publish_addrs();
    }

    /// The earliest moment a relay reservation is to be asked for again, or a superseded
    /// relayed connection closed.
    fn next_timer(&self) -> Option<Instant> {
        let retry = self.relays.iter().filter_map(|s| s.retry_at);
        retry.chain(self.superseded.iter().map(|(at, _)| *at)).min()
    }

    /// Asks again every relay whose back-off is over, and closes the relayed connections
    /// whose grace is over.
    fn timer_due(&mut self) {
        let now = Instant::now();
        let (due, wait): (Vec<_>, Vec<_>) = self.superseded.drain(..).partition(|(at, _)| *at <= now);
        self.superseded = wait;
        for (_, id) in due {
            self.swarm.close_connection(id);
        }
        for i in 0..self.relays.len() {
            if self.relays[i].retry_at.is_some_and(|at| at <= now) {
                self.reserve(i);
            }
        }
    }

    /// Whether `peer` is a relay this node keeps a reservation on.
    fn is_relay(&self, peer: &PeerId) -> bool {
        self.relays.iter().any(|s| s.peer == *peer)
    }

    /// The addresses this node tells others about: its direct listen addresses, then those
    /// of its relay reservations, then external addresses that AutoNAT confirmed reachable
    /// (or, for a node serving as a relay, its listen addresses). An address that peers only
    /// observed (e.g. a NAT's outside address) is never among them until confirmed.
    fn publish_addrs(&mut self) {
        let mut addrs: Vec<Multiaddr> = Vec::new();
        if self.network.enabled {
            let (relayed, direct): (Vec<&Multiaddr>, Vec<&Multiaddr>) = self
                .swarm
                .listeners()
                .partition(|a| a.iter().any(|p| p == Protocol::P2pCircuit));
            for addr in direct
                .into_iter()
                .chain(relayed)
                .chain(self.swarm.external_addresses())
            {
                if !addrs.contains(addr) {
                    addrs.push(addr.clone());
                }
            }
        }
        self.listen_addrs.send_if_modified(|current| {
            if *current == addrs {
                false
            } else {
                *current = addrs;
                true
            }
        });
    }

    /// How `peer` is reached, if it is connected.
    fn path_of(&self, peer: &PeerId) -> Option<Path> {
        let mut path = None;
        for (p, _, relayed) in self.connections.values() {
            if p == peer {
                if !relayed {
                    return Some(Path::Direct);
                }
                path = Some(Path::Relayed);
            }
        }
        path
    }

    fn dial_outcome(&mut self, peer: PeerId, connected: bool) {
        for waiter in self.dial_waiters.remove(&peer).unwrap_or_default() {
            let _ = waiter.send(connected);
        }
    }

    /// The narrowest scope over which `peer` is connected, if it is.
    fn scope_of_peer(&self, peer: &PeerId) -> Option<Scope> {
        self.connections
            .values()
            .filter(|(p, _, _)| p == peer)
            .filter_map(|(_, scope, _)| *scope)
            .min()
    }

    /// Takes what helpers answered about `peer`, each as far as its own connection allows;
    /// dials `peer` if anything was taken. Returns what was taken.
    fn learn(&mut self, peer: PeerId, answers: Vec<(PeerId, Vec<Multiaddr>)>) -> Vec<Multiaddr> {
        let mut taken = Vec::new();
        if peer == *self.swarm.local_peer_id() {
            return taken;
        }
        for (helper, addrs) in answers {
            let Some(over) = self.scope_of_peer(&helper) else {
                continue;
            };
            for addr in addrs.iter().take(PEERS_MAX_ADDRS) {
                if let Some(bare) =
                    self.remember(peer, addr, Origin::Told(over), Discovery::Exchange)
                    && !taken.contains(&bare)
                {
                    taken.push(bare);
                }
            }
        }
        if !taken.is_empty() {
            self.dial_known(peer, None);
        }
        taken
    }

    /// The addresses of `peer` this node had first hand, as full multiaddrs, to answer
    /// another peer's question.
    fn first_hand_addresses(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.book
            .get(&peer)
            .map(|e| {
                e.first_hand()
                    .into_iter()
                    .take(PEERS_MAX_ADDRS)
                    .map(|a| a.with_p2p(peer).unwrap_or_else(|a| a))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_connected(&mut self, peer: PeerId, connected: bool) {
        if connected {
            self.connected.insert(peer);
        } else {
            self.connected.remove(&peer);
        }
        if let Ok(mut shared) = self.shared_connected.lock() {
            shared.clone_from(&self.connected);
        }
    }

    async fn run(mut self, tasks: Tasks) {
        loop {
            let next_timer = self.next_timer();
            tokio::select! {
                _ = tasks.stopping() => break,
                command = self.commands.recv() => match command {
                    Some(Command::Dial(addr, reply)) => {
                        let result = if self.network.enabled {
                            self.dial(addr)
                        } else {
                            Err("the network is disabled".into())
                        };
                        let _ = reply.send(result);
                    }
                    Some(Command::SetEnabled(enabled, reply)) => {
                        let _ = reply.send(self.set_enabled(enabled));
                    }
                    Some(Command::Peers(reply)) => {
                        let _ = reply.send(self.peer_list());
                    }
                    Some(Command::Addresses(peer, reply)) => {
                        let _ = reply.send(self.first_hand_addresses(peer));
                    }
                    Some(Command::Learn(peer, answers, reply)) => {
                        let _ = reply.send(self.learn(peer, answers));
                    }
                    Some(Command::DialKnown(peer, reply)) => self.dial_known(peer, Some(reply)),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                () = sleep_until_some(next_timer) => self.timer_due(),
            }
        }
        tracing::debug!("p2p swarm stopped");
    }

    fn peer_list(&self) -> Vec<PeerInfo> {
        let mut list: Vec<PeerInfo> = self
            .book
            .iter()
            .map(|(peer, known)| PeerInfo {
                peer_id: *peer,
                server_name: server_name_for_peer(peer),
                addresses: known.addresses(),
                connected: self.connected.contains(peer),
                discovered: known.discovered,
                path: self.path_of(peer),
            })
            .collect();
        // A connected peer the book had no room for is still listed.
        for peer in &self.connected {
            if self.book.get(peer).is_none() {
                let relay = self.is_relay(peer);
                list.push(PeerInfo {
                    peer_id: *peer,
                    // A relay is not a homeserver.
                    server_name: if relay {
                        None
                    } else {
                        server_name_for_peer(peer)
                    },
                    addresses: Vec::new(),
                    connected: true,
                    discovered: if relay {
                        Discovery::Relay
                    } else {
                        Discovery::Inbound
                    },
                    path: self.path_of(peer),
                });
            }
        }
        list.sort_by_key(|p| p.peer_id.to_string());
        list
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
                let circuit = address.iter().any(|p| p == Protocol::P2pCircuit);
                if self.serve_relay && !circuit {
                    // A relay tells its clients where it is reached: where it listens.
                    self.swarm.add_external_address(address);
                }
                self.publish_addrs();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if self.serve_relay {
                    self.swarm.remove_external_address(&address);
                }
                self.publish_addrs();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let reason = match reason {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                };
                self.listener_closed(listener_id, reason);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "address confirmed reachable");
                self.publish_addrs();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!(%address, "address no longer confirmed reachable");
                self.publish_addrs();
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                circuit::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal,
                    ..
                },
            )) => {
                if let Some(slot) = self.relays.iter_mut().find(|s| s.peer == relay_peer_id) {
                    slot.backoff = RESERVE_BACKOFF_MIN;
                    if !renewal {
                        tracing::info!(relay = %slot.addr, "relay reservation accepted");
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(_) => tracing::info!(peer = %remote_peer_id, "hole punched: direct connection"),
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, error = %e, "hole punching failed; staying on the relay");
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(event)) => {
                relay::log_relay_event(&event);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if !self.network.enabled {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let scope = Scope::of_addr(endpoint.get_remote_address());
                let relayed = endpoint.is_relayed();
                let before = self.path_of(&peer_id);
                self.connections
                    .insert(connection_id, (peer_id, scope, relayed));
                if !relayed {
                    // A direct connection replaces relayed ones (a punched hole, or the peer
                    // came onto the same network): the relay's circuits are bounded, and
                    // streams should take the direct path.
                    let at = Instant::now() + RELAYED_GRACE;
                    for (id, (p, _, r)) in &self.connections {
                        if *p == peer_id && *r && !self.superseded.iter().any(|(_, s)| s == id) {
                            self.superseded.push((at, *id));
                        }
                    }
                }
                let path = if relayed { Path::Relayed } else { Path::Direct };
                // A peer the node dialled is in the book already (with how it was found); one
                // that is not connected to us first. Neither is taken as added by the app,
                // which would keep it for good.
                self.book
                    .touch(peer_id, Discovery::Inbound, false, &self.connected);
                if num_established.get() == 1 {
                    self.set_connected(peer_id, true);
                    tracing::info!(peer = %peer_id, path = path.as_str(), "peer connected");
                    let _ = self.events.send(PeerEvent::Connected(peer_id, path));
                } else if let Some(before) = before
                    && before != self.path_of(&peer_id).unwrap_or(before)
                {
                    tracing::info!(peer = %peer_id, path = path.as_str(), "peer path changed");
                    let _ = self.events.send(PeerEvent::PathChanged(peer_id, path));
                }
                self.dial_outcome(peer_id, true);
                if !relayed {
                    self.dial_after_relay(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                let before = self.path_of(&peer_id);
                self.connections.remove(&connection_id);
                self.superseded.retain(|(_, id)| *id != connection_id);
                if num_established == 0 {
                    self.set_connected(peer_id, false);
                    tracing::info!(peer = %peer_id, "peer disconnected");
                    let _ = self.events.send(PeerEvent::Disconnected(peer_id));
                } else if let Some(after) = self.path_of(&peer_id)
                    && Some(after) != before
                {
                    tracing::info!(peer = %peer_id, path = after.as_str(), "peer path changed");
                    let _ = self.events.send(PeerEvent::PathChanged(peer_id, after));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id
                    && !self.connected.contains(&peer)
                {
                    self.dial_outcome(peer, false);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                let mut found_peers = Vec::new();
                for (peer, addr) in found {
                    if self
                        .remember(peer, &addr, Origin::Mdns, Discovery::Mdns)
                        .is_some()
                        && !found_peers.contains(&peer)
                    {
                        found_peers.push(peer);
                    }
                }
                for peer in found_peers {
                    self.dial_known(peer, None);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                connection_id,
                peer_id,
                info,
            })) => {
                // What the peer says it listens on, taken as far as the connection it said it
                // on allows; it is also what this node passes on to others.
                let Some((_, Some(over), _)) = self.connections.get(&connection_id).copied() else {
                    return;
                };
                for addr in info.listen_addrs.iter().take(IDENTIFY_MAX_ADDRS) {
                    self.remember(peer_id, addr, Origin::Itself(over), Discovery::Inbound);
                }
            }
            _ => {}
        }
    }
}

/// The relay a circuit address goes through (`…/p2p/<relay>/p2p-circuit…`), if it is one.
fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => relay = Some(id),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

/// Waits until `at`, or for ever when there is no `at`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Asks `helper` for the addresses it knows for `peer`: the question is the peer id as text,
/// the answer a JSON array of multiaddrs, each ending in `/p2p/<peer>`.
async fn ask_for_peer(
    control: &mut libp2p_stream::Control,
    helper: PeerId,
    peer: PeerId,
) -> std::io::Result<Vec<Multiaddr>> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut stream = control
        .open_stream(helper, PEERS_PROTOCOL)
        .await
        .map_err(std::io::Error::other)?;
    stream.write_all(peer.to_string().as_bytes()).await?;
    stream.close().await?;
    let mut answer = Vec::new();
    stream
        .take(PEERS_MAX_BYTES)
        .read_to_end(&mut answer)
        .await?;
    let addrs: Vec<String> = serde_json::from_slice(&answer).map_err(std::io::Error::other)?;
    // The address book decides what to take; see [`book::admit`].
    Ok(addrs
        .iter()
        .take(PEERS_MAX_ADDRS)
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .collect())
}

/// Answers one peer-address question with the addresses this node had first hand.
async fn answer_peer_question(
    stream: libp2p::Stream,
    commands: &mpsc::Sender<Command>,
) -> std::io::Result<()> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut question = Vec::new();
    let mut stream = stream;
    (&mut stream).take(128).read_to_end(&mut question).await?;
    let addrs = match std::str::from_utf8(&question)
        .ok()
        .and_then(|s| s.trim().parse::<PeerId>().ok())
    {
        Some(peer) => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Addresses(peer, tx)).await.is_err() {
                return Ok(());
            }
            rx.await.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let strings: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let body = serde_json::to_vec(&strings).map_err(std::io::Error::other)?;
    stream.write_all(&body).await?;
    stream.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_asked_about_once_per_back_off() {
        let mut sought = Sought::default();
        let peer = PeerId::random();
        let start = Instant::now();
        let at = |d: Duration| start + d;
        assert!(sought.may_ask(peer, start));
        assert!(!sought.may_ask(peer, start), "asked again at once");
        assert!(sought.may_ask(peer, at(ASK_BACKOFF_MIN)));
        // The wait doubles.
        assert!(!sought.may_ask(peer, at(ASK_BACKOFF_MIN * 2)));
        assert!(sought.may_ask(peer, at(ASK_BACKOFF_MIN * 3)));
        // ...up to its longest.
        let mut t = at(ASK_BACKOFF_MIN * 3);
        for _ in 0..20 {
            t += ASK_BACKOFF_MAX;
            assert!(sought.may_ask(peer, t));
        }
        // Once reached, it may be asked about at once when lost again.
        sought.reached(&peer);
        assert!(sought.may_ask(peer, t));
    }

    #[test]
    fn the_destinations_asked_about_are_bounded() {
        let mut sought = Sought::default();
        let start = Instant::now();
        for _ in 0..MAX_SOUGHT {
            assert!(sought.may_ask(PeerId::random(), start));
        }
        assert!(!sought.may_ask(PeerId::random(), start), "past the bound");
        let later = start + ASK_BACKOFF_MIN;
        assert!(
            sought.may_ask(PeerId::random(), later),
            "room once back-offs end"
        );
        assert!(sought.next.len() <= MAX_SOUGHT);
    }
}
