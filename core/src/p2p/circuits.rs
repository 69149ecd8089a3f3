//! Reaching peers across networks, as the swarm task does it: the relay reservations this
//! node keeps (asked for again with a back-off when refused or lost), the addresses it tells
//! others about (direct, then through relays, then external ones AutoNAT confirmed), and
//! the path to each connected peer (a direct connection, once one opens by hole punching or
//! otherwise, replaces relayed ones after a short grace).

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use tokio::time::Instant;

use super::{Path, driver::Driver, peer_of};

/// The first wait before a lost or refused relay reservation is asked for again.
const RESERVE_BACKOFF_MIN: Duration = Duration::from_secs(5);
/// The longest wait between attempts at a relay reservation.
const RESERVE_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Most dials waiting for a relay's connection (see [`Driver::defer_for_relay`]).
const MAX_AFTER_RELAY: usize = 64;
/// How long a relayed connection stays open once a direct one to the same peer is up: long
/// enough for the peer to see the direct connection too before the relayed one goes, so
/// neither side sees the peer leave and come back.
pub(super) const RELAYED_GRACE: Duration = Duration::from_secs(2);

/// A relay this node keeps a reservation on.
pub(super) struct RelaySlot {
    /// The relay's address, ending in `/p2p/<relay id>`.
    pub(super) addr: Multiaddr,
    /// The relay's peer id.
    pub(super) peer: PeerId,
    /// The listener that holds the reservation, while one is asked for or held.
    pub(super) listener: Option<libp2p::core::transport::ListenerId>,
    /// When to ask again, after the reservation was refused or lost.
    pub(super) retry_at: Option<Instant>,
    /// The wait before the next attempt after this one fails.
    pub(super) backoff: Duration,
}

impl RelaySlot {
    pub(super) fn new(addr: Multiaddr) -> Option<Self> {
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

impl Driver {
    /// Gives up every reservation and forgets the external addresses (the network goes off).
    pub(super) fn drop_reservations(&mut self) {
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
    }

    /// A relay accepted (or renewed) this node's reservation.
    pub(super) fn reservation_accepted(&mut self, relay: PeerId, renewal: bool) {
        if let Some(slot) = self.relays.iter_mut().find(|s| s.peer == relay) {
            slot.backoff = RESERVE_BACKOFF_MIN;
            if !renewal {
                tracing::info!(relay = %slot.addr, "relay reservation accepted");
            }
        }
    }

    /// Asks every relay without a reservation for one.
    pub(super) fn reserve_all(&mut self) {
        for i in 0..self.relays.len() {
            if self.relays[i].listener.is_none() {
                self.reserve(i);
            }
        }
    }

    /// Asks relay `i` for a reservation: listening on its circuit address dials it if need
    /// be, and the reservation's address becomes one of this node's listen addresses.
    pub(super) fn reserve(&mut self, i: usize) {
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
    pub(super) fn listener_closed(
        &mut self,
        id: libp2p::core::transport::ListenerId,
        reason: String,
    ) {
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
    pub(super) fn next_timer(&self) -> Option<Instant> {
        let retry = self.relays.iter().filter_map(|s| s.retry_at);
        retry.chain(self.superseded.iter().map(|(at, _)| *at)).min()
    }

    /// Asks again every relay whose back-off is over, and closes the relayed connections
    /// whose grace is over.
    pub(super) fn timer_due(&mut self) {
        let now = Instant::now();
        let (due, wait): (Vec<_>, Vec<_>) =
            self.superseded.drain(..).partition(|(at, _)| *at <= now);
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
    pub(super) fn is_relay(&self, peer: &PeerId) -> bool {
        self.relays.iter().any(|s| s.peer == *peer)
    }

    /// The addresses this node tells others about: its direct listen addresses, then those
    /// of its relay reservations, then external addresses that AutoNAT confirmed reachable
    /// (or, for a node serving as a relay, its listen addresses). An address that peers only
    /// observed (e.g. a NAT's outside address) is never among them until confirmed.
    pub(super) fn publish_addrs(&mut self) {
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
    pub(super) fn path_of(&self, peer: &PeerId) -> Option<Path> {
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

    /// Whether a dial of `peer` at `addrs` waits for one of this node's relays: when an
    /// address goes through a relay whose reservation is being asked for, the dial starts once
    /// that relay is connected (or its reservation failed). Dialling it at the same time
    /// would race the reservation's own connection to the relay, and one of the two would be
    /// dropped.
    pub(super) fn defer_for_relay(&mut self, peer: PeerId, addrs: &[Multiaddr]) -> bool {
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
    pub(super) fn dial_after_relay(&mut self, relay: PeerId) {
        let (ready, wait): (Vec<_>, Vec<_>) =
            self.after_relay.drain(..).partition(|(r, _)| *r == relay);
        self.after_relay = wait;
        for (_, peer) in ready {
            self.dial_known(peer, None);
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
pub(super) async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
