//! Circuit relay: the limits a relay holds its clients to, and the relay-only node.
//!
//! A relay (circuit relay v2) lets two peers that cannot reach each other, each behind its
//! own NAT, talk through a third that both can reach. A peer first makes a *reservation* on
//! the relay; others then reach it at `<relay address>/p2p-circuit/p2p/<its id>`, and the
//! relay copies bytes between the two connections. Only peers holding a reservation can be
//! reached this way, so the relay is never a proxy to arbitrary hosts; and every reservation
//! and circuit is bounded by [`RelayLimits`] (counts in all and per peer, bytes and duration
//! per circuit, plus the relay protocol's own per-peer and per-IP rate limits).
//!
//! [`RelayNode`] is a node that does nothing else: identify, ping, the relay service and an
//! AutoNAT server (so the peers it serves learn whether their own addresses are reachable).
//! No client API, no rooms, no database. A normal node can serve as a relay too
//! ([`super::P2pConfig::serve_relay`]); it uses the same limits.

use std::{num::NonZeroU32, time::Duration};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, connection_limits, identify, noise, ping, relay,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use tokio::sync::watch;

use crate::{
    error::{Error, Result},
    identity::Identity,
    tasks::Tasks,
};

/// What a relay allows its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once, in total.
    pub max_reservations: usize,
    /// Reservations one peer may hold at once.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts before its holder must renew it.
    pub reservation_duration: Duration,
    /// Circuits open at once, in total.
    pub max_circuits: usize,
    /// Circuits open at once to or from one peer.
    pub max_circuits_per_peer: usize,
    /// How long one circuit may stay open; the peers open a new one (or connect directly).
    pub max_circuit_duration: Duration,
    /// Bytes one circuit may carry in each direction before it is closed.
    pub max_circuit_bytes: u64,
    /// Connections open at once, in total (relay-only nodes; a normal node serving as a
    /// relay uses its federation limits).
    pub max_connections: u32,
}

impl Default for RelayLimits {
    /// Sized for a small VPS or an always-on device serving a few dozen phones: enough for a
    /// chat to go on through a relay, far too little to carry bulk traffic.
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 2,
            reservation_duration: Duration::from_secs(60 * 60),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(10 * 60),
            max_circuit_bytes: 8 * 1024 * 1024,
            max_connections: 512,
        }
    }
}

impl RelayLimits {
    /// The relay service's configuration: these limits, and the protocol's rate limits (per
    /// peer and per IP address, for reservations and for circuits).
    pub fn relay_config(&self) -> relay::Config {
        let per = |limit: u32, secs: u64| (NonZeroU32::new(limit), Duration::from_secs(secs));
        let mut config = relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            reservation_rate_limiters: Vec::new(),
            circuit_src_rate_limiters: Vec::new(),
        };
        // Token buckets: up to `limit` at once, one more every `secs`.
        if let (Some(limit), every) = per(30, 120) {
            config = config.reservation_rate_per_peer(limit, every);
        }
        if let (Some(limit), every) = per(60, 60) {
            config = config
                .reservation_rate_per_ip(limit, every)
                .circuit_src_per_ip(limit, every);
        }
        if let (Some(limit), every) = per(30, 60) {
            config = config.circuit_src_per_peer(limit, every);
        }
        config
    }
}

/// Longest a connection of the relay may take to open (and to finish its handshake). The
/// relay's own dials are AutoNAT dial-backs: one to an address behind a NAT that drops it must
/// fail before the AutoNAT answer times out (10 s), so that the client hears "unreachable"
/// and stops asking, rather than asking again (with its dial-back data) every few minutes.
const DIAL_TIMEOUT: Duration = Duration::from_secs(6);
/// How often the relay pings each client. The clients ping their relay to keep their
/// reservation's connection (and NAT mapping) open; the relay's pings only notice dead
/// clients, which is not urgent.
const RELAY_PING_INTERVAL: Duration = Duration::from_secs(5 * 60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(NetworkBehaviour)]
struct RelayBehaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    relay: relay::Behaviour,
    autonat: libp2p_autonat::v2::server::Behaviour,
}

/// A relay-only node: runs among `tasks` until they stop.
pub struct RelayNode {
    peer_id: PeerId,
    addrs: watch::Receiver<Vec<Multiaddr>>,
}

impl RelayNode {
    /// Listens on `listen` and serves reservations and circuits within `limits`.
    ///
    /// A relay tells the peers it serves where it can be reached: its listen addresses (the
    /// operator put it where those are reachable), or `announce` when given (a public
    /// address the host does not see on its own interfaces, e.g. behind a cloud's 1:1 NAT).
    pub async fn start(
        identity: &Identity,
        listen: &[Multiaddr],
        announce: &[Multiaddr],
        limits: &RelayLimits,
        tasks: &Tasks,
    ) -> Result<Self> {
        if listen.is_empty() {
            return Err(Error::Network("a relay needs a listen address".into()));
        }
        let keypair = identity.libp2p_keypair()?;
        let peer_id = keypair.public().to_peer_id();
        let connection_limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(limits.max_connections))
            .with_max_established_per_peer(Some(4))
            .with_max_pending_incoming(Some(64));
        let relay_config = limits.relay_config();
        let mut swarm: Swarm<RelayBehaviour> =
            libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_other_transport(|key| -> std::result::Result<_, BoxError> {
                    use libp2p::core::{Transport, upgrade::Version};
                    Ok(
                        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                            .upgrade(Version::V1Lazy)
                            .authenticate(noise::Config::new(key)?)
                            .multiplex(yamux::Config::default())
                            .timeout(DIAL_TIMEOUT),
                    )
                })
                .map_err(|e| Error::Network(e.to_string()))?
                .with_behaviour(|key| RelayBehaviour {
                    limits: connection_limits::Behaviour::new(connection_limits),
                    identify: identify::Behaviour::new(
                        identify::Config::new(super::IDENTIFY_PROTOCOL.to_owned(), key.public())
                            .with_agent_version(super::RELAY_AGENT.to_owned())
                            .with_cache_size(0),
                    ),
                    ping: ping::Behaviour::new(
                        ping::Config::new().with_interval(RELAY_PING_INTERVAL),
                    ),
                    relay: relay::Behaviour::new(key.public().to_peer_id(), relay_config),
                    autonat: libp2p_autonat::v2::server::Behaviour::default(),
                })
                .map_err(|e| Error::Network(e.to_string()))?
                .with_swarm_config(|c| {
                    c.with_idle_connection_timeout(super::IDLE_CONNECTION_TIMEOUT)
                })
                .build();
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Network(format!("listen on {addr}: {e}")))?;
        }
        for addr in announce {
            swarm.add_external_address(addr.clone());
        }
        let announced = !announce.is_empty();
        let (addr_tx, addrs) = watch::channel(Vec::new());
        let mut rx = addrs.clone();
        tasks.spawn_draining(drive_relay(swarm, addr_tx, announced, tasks.clone()));
        let wait = rx.wait_for(|a| !a.is_empty());
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            return Err(Error::Network("the relay did not start listening".into()));
        }
        Ok(Self { peer_id, addrs })
    }

    /// The relay's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Where peers reach the relay, each ending in `/p2p/<its id>`.
    pub fn addrs(&self) -> Vec<Multiaddr> {
        self.addrs
            .borrow()
            .iter()
            .map(|a| a.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a))
            .collect()
    }
}

async fn drive_relay(
    mut swarm: Swarm<RelayBehaviour>,
    addrs: watch::Sender<Vec<Multiaddr>>,
    announced: bool,
    tasks: Tasks,
) {
    loop {
        let event = tokio::select! {
            _ = tasks.stopping() => break,
            event = swarm.select_next_some() => event,
        };
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "relay listening");
                if !announced {
                    swarm.add_external_address(address.clone());
                }
                addrs.send_modify(|a| a.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if !announced {
                    swarm.remove_external_address(&address);
                }
                addrs.send_modify(|a| a.retain(|x| *x != address));
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(event)) => log_relay_event(&event),
            _ => {}
        }
    }
    tracing::debug!("relay stopped");
}

/// Logs what the relay service did (reservations and circuits, accepted or refused).
pub(super) fn log_relay_event(event: &relay::Event) {
    match event {
        relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
            tracing::info!(peer = %src_peer_id, "relay: reservation accepted");
        }
        relay::Event::ReservationReqDenied { src_peer_id, .. } => {
            tracing::info!(peer = %src_peer_id, "relay: reservation refused");
        }
        relay::Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => {
            tracing::info!(from = %src_peer_id, to = %dst_peer_id, "relay: circuit opened");
        }
        relay::Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            ..
        } => {
            tracing::info!(from = %src_peer_id, to = %dst_peer_id, "relay: circuit refused");
        }
        relay::Event::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            ..
        } => {
            tracing::debug!(from = %src_peer_id, to = %dst_peer_id, "relay: circuit closed");
        }
        other => tracing::debug!(event = ?other, "relay"),
    }
}
