//! The swarm task: it owns the libp2p swarm, carries out the [`P2p`](super::P2p) handle's commands, keeps
//! the address book and the set of connected peers up to date from swarm events, and switches
//! the network off and on.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, dcutr, identify, mdns,
    multiaddr::Protocol,
    relay as circuit,
    swarm::{ConnectionId, SwarmEvent, behaviour::toggle::Toggle},
};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    time::Instant,
};

use super::{
    Behaviour, BehaviourEvent, Command, Discovery, PEERS_MAX_ADDRS, Path, PeerEvent, PeerInfo,
    book::{Book, Origin, Scope, admit},
    circuits::{RELAYED_GRACE, RelaySlot, sleep_until_some},
    peer_of, relay,
};
use crate::{identity::server_name_for_peer, tasks::Tasks};

/// Most peers redialled when the network comes back on.
const MAX_REDIAL: usize = 32;
/// Most listen addresses of one identify message looked at.
const IDENTIFY_MAX_ADDRS: usize = 64;

/// Longest the swarm task waits for a listener before its first dials.
const FIRST_DIALS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The dials a node makes once it listens: peers of earlier runs and configured ones.
pub(super) struct FirstDials {
    /// Peers remembered from earlier runs, and how each was found.
    pub(super) remembered: Vec<(Multiaddr, Discovery)>,
    /// Configured peers (full multiaddrs).
    pub(super) static_peers: Vec<Multiaddr>,
}

/// What [`P2p::set_enabled`](super::P2p::set_enabled) needs to switch the network off and on again.
pub(super) struct Network {
    pub(super) enabled: bool,
    pub(super) listen: Vec<Multiaddr>,
    pub(super) listeners: Vec<libp2p::core::transport::ListenerId>,
    pub(super) mdns: bool,
    /// The peers connected when the network went off, redialled when it comes back.
    pub(super) redial: Vec<PeerId>,
}

pub(super) struct Driver {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) listen_addrs: watch::Sender<Vec<Multiaddr>>,
    pub(super) events: broadcast::Sender<PeerEvent>,
    pub(super) book: Book,
    pub(super) connected: HashSet<PeerId>,
    /// [`Driver::connected`] as [`P2p::is_connected`](super::P2p::is_connected) reads it.
    pub(super) shared_connected: Arc<Mutex<HashSet<PeerId>>>,
    /// Every open connection: its peer, the scope of its remote address (`None` when that is
    /// not an IP address; a relayed connection has its relay's) and whether it is relayed.
    pub(super) connections: HashMap<ConnectionId, (PeerId, Option<Scope>, bool)>,
    /// The relays this node keeps a reservation on.
    pub(super) relays: Vec<RelaySlot>,
    /// Whether this node serves as a relay (its listen addresses are then its external ones).
    pub(super) serve_relay: bool,
    /// Relayed connections to close, each once its peer has had a direct connection for
    /// [`RELAYED_GRACE`].
    pub(super) superseded: Vec<(Instant, ConnectionId)>,
    /// Peers to dial once a relay is connected: (relay, peer).
    pub(super) after_relay: Vec<(PeerId, PeerId)>,
    pub(super) learned: Option<mpsc::Sender<(PeerId, Multiaddr, Discovery)>>,
    /// Who waits for the outcome of a dial to a peer: `true` once connected, `false` if it
    /// failed.
    pub(super) dial_waiters: HashMap<PeerId, Vec<oneshot::Sender<bool>>>,
    pub(super) network: Network,
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
            self.drop_reservations();
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
    pub(super) fn dial(&mut self, addr: Multiaddr) -> Result<(), String> {
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

    /// Puts the peers of an earlier run back in the book and dials each once.
    pub(super) fn redial_remembered(&mut self, remembered: &[(Multiaddr, Discovery)]) {
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
    pub(super) fn dial_known(&mut self, peer: PeerId, reply: Option<oneshot::Sender<bool>>) {
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

    pub(super) async fn run(mut self, tasks: Tasks, first: FirstDials) {
        // Listening first: a TCP dial leaves from the port the node listens on (so a NAT that
        // keeps ports maps every connection to one outside address, which hole punching
        // needs) only once that listener is up. Relays and peers are dialled after that, or
        // after [`FIRST_DIALS_WAIT`] if no listener comes up.
        let deadline = Instant::now() + FIRST_DIALS_WAIT;
        while !self.network.listen.is_empty() && self.swarm.listeners().next().is_none() {
            tokio::select! {
                _ = tasks.stopping() => return,
                () = tokio::time::sleep_until(deadline) => break,
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        self.reserve_all();
        self.redial_remembered(&first.remembered);
        for addr in first.static_peers {
            if let Err(e) = self.dial(addr) {
                tracing::warn!(error = %e, "static peer not dialled");
            }
        }
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
            .map(|(peer, known)| self.peer_info(*peer, known.addresses(), known.discovered))
            .collect();
        // A connected peer the book had no room for is still listed.
        for peer in &self.connected {
            if self.book.get(peer).is_none() {
                list.push(self.peer_info(*peer, Vec::new(), Discovery::Inbound));
            }
        }
        list.sort_by_key(|p| p.peer_id.to_string());
        list
    }

    /// What is known of `peer`. A relay of this node's is not a homeserver, however it came
    /// to be known: it has no server name and is listed as a relay.
    fn peer_info(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        discovered: Discovery,
    ) -> PeerInfo {
        let relay = self.is_relay(&peer);
        PeerInfo {
            peer_id: peer,
            server_name: if relay {
                None
            } else {
                server_name_for_peer(&peer)
            },
            addresses,
            connected: self.connected.contains(&peer),
            discovered: if relay { Discovery::Relay } else { discovered },
            path: self.path_of(&peer),
        }
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
                self.reservation_accepted(relay_peer_id, renewal);
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
