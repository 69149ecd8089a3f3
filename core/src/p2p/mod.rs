//! The peer-to-peer transport: a libp2p swarm (TCP, Noise, Yamux) with identify, ping,
//! optional mDNS, and a stream protocol that carries federation HTTP.
//!
//! The swarm runs in one task. The rest of the node talks to it through [`P2p`]: opening
//! federation streams, dialling peers, and watching peers come and go.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures::StreamExt;
pub use libp2p::{Multiaddr, PeerId};
use libp2p::{
    StreamProtocol, Swarm, connection_limits, identify, mdns, noise, ping,
    swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle},
    tcp, yamux,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    config::FederationLimits,
    error::{Error, Result},
    identity::{Identity, server_name_for_peer},
};

/// The stream protocol federation requests travel on.
pub const FEDERATION_PROTOCOL: StreamProtocol = StreamProtocol::new("/neurite/federation/1");

/// The stream protocol a node asks its peers on for another peer's addresses.
pub const PEERS_PROTOCOL: StreamProtocol = StreamProtocol::new("/neurite/peers/1");

/// Longest a peer-address question may take.
const PEERS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read of a peer-address question or answer.
const PEERS_MAX_BYTES: u64 = 16 * 1024;
/// Most addresses given or taken for one peer.
const PEERS_MAX_ADDRS: usize = 16;

/// A connection with no open streams is closed after this long. Peers reconnect on demand.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

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
}

/// A change in connectivity.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// The first connection to a peer opened.
    Connected(PeerId),
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
    /// Peers remembered from earlier runs, redialled at start.
    pub remembered: Vec<Multiaddr>,
    /// Receives every address learnt for a peer, for the address book.
    pub learned: Option<mpsc::UnboundedSender<(PeerId, Multiaddr, Discovery)>>,
    /// Connection and stream bounds.
    pub limits: FederationLimits,
}

impl Discovery {
    /// A stable name for storage and display.
    pub fn as_str(self) -> &'static str {
        match self {
            Discovery::Static => "static",
            Discovery::Mdns => "mdns",
            Discovery::Inbound => "inbound",
            Discovery::Exchange => "exchange",
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Dial(Multiaddr, Discovery, oneshot::Sender<Result<(), String>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    SetEnabled(bool, oneshot::Sender<Result<(), String>>),
    Addresses(PeerId, oneshot::Sender<Vec<Multiaddr>>),
    Learn(PeerId, Vec<Multiaddr>),
    DialKnown(PeerId, oneshot::Sender<bool>),
}

/// Handle to the running swarm. Cheap to clone.
#[derive(Clone)]
pub struct P2p {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    events: broadcast::Sender<PeerEvent>,
}

/// The peer id at the end of a multiaddr (`/p2p/<id>`), if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

impl P2p {
    /// Builds the swarm, starts listening, dials static peers, and runs it until `stop` fires.
    pub async fn start(
        identity: &Identity,
        config: P2pConfig,
        stop: watch::Receiver<bool>,
    ) -> Result<Self> {
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
        let mut swarm = builder
            .with_behaviour(|key| {
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        key.public().to_peer_id(),
                    )?)
                } else {
                    None
                };
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(connection_limits),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/neurite/1".to_owned(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: Toggle::from(mdns),
                    stream: libp2p_stream::Behaviour::new(),
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
        let mut driver = Driver {
            swarm,
            commands: command_rx,
            listen_addrs: addr_tx,
            events: events.clone(),
            peers: HashMap::new(),
            connected: HashSet::new(),
            learned: config.learned.clone(),
            dial_waiters: HashMap::new(),
            network: Network {
                enabled: true,
                listen: config.listen.clone(),
                listeners,
                mdns: mdns_on,
            },
        };
        for addr in &config.remembered {
            if let Err(e) = driver.dial(addr.clone(), Discovery::Static) {
                tracing::debug!(error = %e, "remembered peer not dialled");
            }
        }
        for addr in &config.static_peers {
            if let Err(e) = driver.dial(addr.clone(), Discovery::Static) {
                tracing::warn!(error = %e, "static peer not dialled");
            }
        }
        let mut asked = control
            .clone()
            .accept(PEERS_PROTOCOL)
            .map_err(|e| Error::Network(e.to_string()))?;
        let answer_commands = commands.clone();
        tokio::spawn(async move {
            while let Some((from, stream)) = asked.next().await {
                let commands = answer_commands.clone();
                tokio::spawn(async move {
                    let answer = answer_peer_question(stream, &commands);
                    if tokio::time::timeout(PEERS_TIMEOUT, answer).await.is_err() {
                        tracing::debug!(peer = %from, "peer-address question timed out");
                    }
                });
            }
        });
        tokio::spawn(driver.run(stop));
        let p2p = Self {
            peer_id,
            control,
            commands,
            listen_addrs,
            events,
        };
        p2p.wait_for_listeners(config.listen.len()).await;
        Ok(p2p)
    }

    async fn wait_for_listeners(&self, expected: usize) {
        let mut rx = self.listen_addrs.clone();
        let wait = rx.wait_for(|addrs| addrs.len() >= expected.min(1));
        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Addresses this node listens on, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .borrow()
            .iter()
            .map(|a| a.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a))
            .collect()
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
            .send(Command::Dial(addr, Discovery::Static, tx))
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

    /// Connects to `peer` if it can: first at the addresses this node knows, then at
    /// addresses its connected peers know (see [`P2p::find_peer`]). Returns whether a
    /// connection is open.
    pub async fn reach(&self, peer: PeerId) -> bool {
        if self.dial_and_wait(peer).await {
            return true;
        }
        !self.find_peer(peer).await.is_empty() && self.dial_and_wait(peer).await
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

    /// Asks every connected peer for addresses of `peer`, adds what they know (peer
    /// exchange) and dials it. Returns the addresses learnt.
    pub async fn find_peer(&self, peer: PeerId) -> Vec<Multiaddr> {
        let helpers: Vec<PeerId> = self
            .peers()
            .await
            .into_iter()
            .filter(|p| p.connected && p.peer_id != peer)
            .map(|p| p.peer_id)
            .collect();
        let asks = helpers.into_iter().map(|helper| {
            let mut control = self.control.clone();
            async move {
                let ask = ask_for_peer(&mut control, helper, peer);
                match tokio::time::timeout(PEERS_TIMEOUT, ask).await {
                    Ok(Ok(addrs)) => addrs,
                    Ok(Err(e)) => {
                        tracing::debug!(%helper, error = %e, "peer-address question failed");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            }
        });
        let mut found: Vec<Multiaddr> = Vec::new();
        for addrs in futures::future::join_all(asks).await {
            for a in addrs {
                if !found.contains(&a) {
                    found.push(a);
                }
            }
        }
        found.truncate(PEERS_MAX_ADDRS);
        if !found.is_empty() {
            tracing::info!(%peer, addresses = found.len(), "learnt addresses from peers");
            let _ = self
                .commands
                .send(Command::Learn(peer, found.clone()))
                .await;
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
}

struct Known {
    addresses: Vec<Multiaddr>,
    discovered: Discovery,
}

struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    listen_addrs: watch::Sender<Vec<Multiaddr>>,
    events: broadcast::Sender<PeerEvent>,
    peers: HashMap<PeerId, Known>,
    connected: HashSet<PeerId>,
    learned: Option<mpsc::UnboundedSender<(PeerId, Multiaddr, Discovery)>>,
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
            self.listen_addrs.send_modify(Vec::clear);
            self.swarm.behaviour_mut().mdns = Toggle::from(None);
            let connected: Vec<PeerId> = self.connected.iter().copied().collect();
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
        let known: Vec<(PeerId, Vec<Multiaddr>)> = self
            .peers
            .iter()
            .filter(|(_, k)| !k.addresses.is_empty())
            .map(|(p, k)| (*p, k.addresses.clone()))
            .collect();
        for (peer, addresses) in known {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addresses)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "redial failed");
            }
        }
        tracing::info!("p2p network enabled");
        Ok(())
    }

    fn remember(&mut self, peer: PeerId, addr: Multiaddr, how: Discovery) {
        // Kept without the trailing `/p2p/<id>`, so one address is one entry whatever found it.
        let addr: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect();
        let known = self.peers.entry(peer).or_insert(Known {
            addresses: Vec::new(),
            discovered: how,
        });
        if !known.addresses.contains(&addr) {
            known.addresses.push(addr.clone());
            if let Some(tx) = &self.learned {
                let _ = tx.send((peer, addr.clone(), known.discovered));
            }
        }
        self.swarm.add_peer_address(peer, addr);
    }

    fn dial(&mut self, addr: Multiaddr, how: Discovery) -> Result<(), String> {
        if let Some(peer) = peer_of(&addr) {
            if peer == *self.swarm.local_peer_id() {
                return Err("that is this node's own address".into());
            }
            let bare: Multiaddr = addr
                .iter()
                .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                .collect();
            self.remember(peer, bare, how);
        }
        self.swarm
            .dial(addr.clone())
            .map_err(|e| format!("dial {addr}: {e}"))
    }

    /// Dials `peer` at every address this node knows for it; false if it knows none.
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
        let addrs = match self.peers.get(&peer) {
            Some(k) if !k.addresses.is_empty() => k.addresses.clone(),
            _ => return answer(reply, false),
        };
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

    fn dial_outcome(&mut self, peer: PeerId, connected: bool) {
        for waiter in self.dial_waiters.remove(&peer).unwrap_or_default() {
            let _ = waiter.send(connected);
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                command = self.commands.recv() => match command {
                    Some(Command::Dial(addr, how, reply)) => {
                        let result = if self.network.enabled {
                            self.dial(addr, how)
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
                        let addrs = self
                            .peers
                            .get(&peer)
                            .map(|k| k.addresses.iter().take(PEERS_MAX_ADDRS).cloned().collect())
                            .unwrap_or_default();
                        let _ = reply.send(addrs);
                    }
                    Some(Command::Learn(peer, addrs)) => {
                        if peer != *self.swarm.local_peer_id() {
                            for addr in addrs {
                                self.remember(peer, addr, Discovery::Exchange);
                            }
                            self.dial_known(peer, None);
                        }
                    }
                    Some(Command::DialKnown(peer, reply)) => self.dial_known(peer, Some(reply)),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        tracing::debug!("p2p swarm stopped");
    }

    fn peer_list(&self) -> Vec<PeerInfo> {
        let mut list: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(peer, known)| PeerInfo {
                peer_id: *peer,
                server_name: server_name_for_peer(peer),
                addresses: known.addresses.clone(),
                connected: self.connected.contains(peer),
                discovered: known.discovered,
            })
            .collect();
        list.sort_by_key(|p| p.peer_id.to_string());
        list
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
                self.listen_addrs.send_modify(|addrs| addrs.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs
                    .send_modify(|addrs| addrs.retain(|a| *a != address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if !self.network.enabled {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                self.peers.entry(peer_id).or_insert_with(|| Known {
                    addresses: Vec::new(),
                    discovered: if endpoint.is_dialer() {
                        Discovery::Static
                    } else {
                        Discovery::Inbound
                    },
                });
                if num_established.get() == 1 {
                    self.connected.insert(peer_id);
                    tracing::info!(peer = %peer_id, "peer connected");
                    let _ = self.events.send(PeerEvent::Connected(peer_id));
                }
                self.dial_outcome(peer_id, true);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                tracing::info!(peer = %peer_id, "peer disconnected");
                let _ = self.events.send(PeerEvent::Disconnected(peer_id));
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
                for (peer, addr) in found {
                    self.remember(peer, addr, Discovery::Mdns);
                    if !self.connected.contains(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // What the peer says it listens on is what we can pass on to others.
                for addr in info.listen_addrs.into_iter().take(PEERS_MAX_ADDRS) {
                    let bare: Multiaddr = addr
                        .iter()
                        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                        .collect();
                    self.remember(peer_id, bare, Discovery::Inbound);
                }
            }
            _ => {}
        }
    }
}

/// Asks `helper` for the addresses it knows for `peer`: the question is the peer id as text,
/// the answer a JSON array of multiaddrs.
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
    Ok(addrs
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .map(|a| {
            a.iter()
                .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                .collect()
        })
        .take(PEERS_MAX_ADDRS)
        .collect())
}

/// Answers one peer-address question from the addresses this node knows.
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
