//! The address book: which addresses the node keeps for which peers, and whose word it takes
//! for them.
//!
//! Peers are untrusted, and an address in the book is an address the node will dial. So an
//! address is only taken if its origin may point the node there ([`admit`]):
//!
//! - It must name a transport the node speaks (`/ip4|ip6/…/tcp/<port>`, or with the `quic`
//!   feature `/ip4|ip6/…/udp/<port>/quic-v1`), with a port, optionally ending in
//!   `/p2p/<the peer>`; never a DNS name or another peer's id. Unspecified, multicast,
//!   broadcast and reserved IPs are never taken from anyone.
//! - A relay circuit (`<relay's address>/p2p/<relay id>/p2p-circuit[/p2p/<the peer>]`) is
//!   taken on the same terms, judged by the relay's address: it makes the node dial the
//!   relay, and nothing else. The relay must not be the peer itself.
//! - Its IP's [`Scope`] must be at least as wide as its origin's floor: a peer that reaches
//!   the node from the outside cannot make it dial the phone's own loopback or its link. The
//!   app and the configuration (static peers, `add_peer`) may name any scope; mDNS never a
//!   loopback address; a peer speaking for itself (identify) names loopback only if the node
//!   reached it over loopback, link-local only over link-local (or loopback), private and
//!   public always; a peer speaking of another (peer exchange) names loopback only if it is
//!   connected over loopback itself, link-local never, and must end the address in
//!   `/p2p/<that peer>`.
//!
//! The book is bounded ([`Book`]): at most [`MAX_ADDRS_PER_PEER`] addresses per peer (a new
//! address pushes out the oldest one of no more trusted an origin; one told by a third party
//! never pushes out one the peer or the app gave), and at most a configured number of peers
//! (a new peer pushes out the one least recently useful — connected to or added — that the
//! app did not add and that is not connected now).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

use super::Discovery;

/// Most addresses kept for one peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// How far an IP address reaches, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// This host (`127.0.0.0/8`, `::1`).
    Loopback,
    /// This link (`169.254.0.0/16`, `fe80::/10`).
    LinkLocal,
    /// A private network (RFC 1918, shared address space `100.64.0.0/10`, `fc00::/7`).
    Private,
    /// Anything else that can be dialled.
    Public,
}

impl Scope {
    /// The scope of `ip`, or `None` for an address that is never dialled (unspecified,
    /// multicast, broadcast, reserved).
    pub fn of(ip: IpAddr) -> Option<Scope> {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // `::ffff:a.b.c.d` reaches a.b.c.d.
                Some(v4) => Self::of_v4(v4),
                None => Self::of_v6(v6),
            },
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Option<Scope> {
        let [a, b, ..] = ip.octets();
        if a == 0 || ip.is_multicast() || ip.is_broadcast() || a >= 240 {
            None
        } else if ip.is_loopback() {
            Some(Scope::Loopback)
        } else if ip.is_link_local() {
            Some(Scope::LinkLocal)
        } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
            Some(Scope::Private)
        } else {
            Some(Scope::Public)
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Option<Scope> {
        let first = ip.segments()[0];
        if ip.is_unspecified() || ip.is_multicast() {
            None
        } else if ip.is_loopback() {
            Some(Scope::Loopback)
        } else if first & 0xffc0 == 0xfe80 {
            Some(Scope::LinkLocal)
        } else if first & 0xfe00 == 0xfc00 {
            Some(Scope::Private)
        } else {
            Some(Scope::Public)
        }
    }

    /// The scope of the IP a multiaddr starts with, if it starts with a dialable one.
    pub fn of_addr(addr: &Multiaddr) -> Option<Scope> {
        match addr.iter().next()? {
            Protocol::Ip4(ip) => Scope::of(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Scope::of(IpAddr::V6(ip)),
            _ => None,
        }
    }
}

/// Where an address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Given by the app or the configuration (static peers, `add_peer`).
    Explicit,
    /// The address book of an earlier run (taken by one of the other origins then).
    Remembered,
    /// Announced on the local network with mDNS.
    Mdns,
    /// Announced by the peer itself (identify) on a connection whose remote address has this
    /// scope.
    Itself(Scope),
    /// Told by another peer (peer exchange) that is connected over this scope.
    Told(Scope),
}

impl Origin {
    /// Whether an address from this origin may be of `scope`: no narrower than the origin's
    /// floor, and never link-local from a third party (a link-local address means nothing
    /// off its link).
    fn allows(self, scope: Scope) -> bool {
        let floor = match self {
            Origin::Explicit | Origin::Remembered => Scope::Loopback,
            Origin::Mdns => Scope::LinkLocal,
            Origin::Itself(over) => over.min(Scope::Private),
            Origin::Told(Scope::Loopback) => Scope::Loopback,
            Origin::Told(_) => Scope::Private,
        };
        scope >= floor && !(matches!(self, Origin::Told(_)) && scope == Scope::LinkLocal)
    }

    /// How far the node trusts it: an address never pushes out one of a higher rank.
    fn rank(self) -> u8 {
        match self {
            Origin::Explicit => 2,
            Origin::Remembered | Origin::Mdns | Origin::Itself(_) => 1,
            Origin::Told(_) => 0,
        }
    }

    /// Whether the peer itself (or the app) gave it, rather than a third party.
    pub fn first_hand(self) -> bool {
        !matches!(self, Origin::Told(_))
    }
}

/// `addr`, an address of `peer` from `origin`, as the book keeps it (without `/p2p/…`), or
/// `None` if that origin may not make the node dial it (see the module documentation).
pub fn admit(peer: PeerId, addr: &Multiaddr, origin: Origin) -> Option<Multiaddr> {
    let mut parts = addr.iter();
    let ip = parts.next()?;
    if !matches!(ip, Protocol::Ip4(_) | Protocol::Ip6(_)) {
        return None;
    }
    let mut bare = Multiaddr::empty().with(ip);
    match parts.next()? {
        Protocol::Tcp(port) if port != 0 => bare.push(Protocol::Tcp(port)),
        Protocol::Udp(port) if port != 0 && cfg!(feature = "quic") => {
            if parts.next()? != Protocol::QuicV1 {
                return None;
            }
            bare.push(Protocol::Udp(port));
            bare.push(Protocol::QuicV1);
        }
        _ => return None,
    }
    let rest: Vec<Protocol> = parts.by_ref().take(4).collect();
    let rest = match rest.as_slice() {
        // Through a relay: `/p2p/<relay>/p2p-circuit`, then at most the peer's own id.
        [Protocol::P2p(relay), Protocol::P2pCircuit, tail @ ..] if *relay != peer => {
            bare.push(Protocol::P2p(*relay));
            bare.push(Protocol::P2pCircuit);
            tail
        }
        [Protocol::P2p(_), Protocol::P2pCircuit, ..] => return None,
        all => all,
    };
    if rest.len() > 1 {
        return None;
    }
    match rest.first().cloned() {
        None if matches!(origin, Origin::Told(_)) => return None,
        None => {}
        Some(Protocol::P2p(id)) if id == peer => {}
        Some(_) => return None,
    }
    if parts.next().is_some() {
        return None;
    }
    let scope = Scope::of_addr(&bare)?;
    origin.allows(scope).then_some(bare)
}

/// What the book holds for one peer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Addresses, oldest first, each with where it came from.
    addresses: Vec<(Multiaddr, Origin)>,
    /// How the peer became known.
    pub discovered: Discovery,
    /// Given by the app or the configuration: never pushed out.
    pub explicit: bool,
    /// When the peer last connected or was added (the book's clock).
    last_useful: u64,
}

impl Entry {
    /// Every address, oldest first.
    pub fn addresses(&self) -> Vec<Multiaddr> {
        self.addresses.iter().map(|(a, _)| a.clone()).collect()
    }

    /// The addresses the peer itself, mDNS, the app or an earlier run gave.
    pub fn first_hand(&self) -> Vec<Multiaddr> {
        self.addresses
            .iter()
            .filter(|(_, o)| o.first_hand())
            .map(|(a, _)| a.clone())
            .collect()
    }
}

/// The bounded address book.
#[derive(Debug)]
pub struct Book {
    peers: HashMap<PeerId, Entry>,
    max_peers: usize,
    /// Counts up with every [`Book::touch`], to order entries by use.
    clock: u64,
}

impl Book {
    /// An empty book of at most `max_peers` peers (at least one).
    pub fn new(max_peers: usize) -> Self {
        Self {
            peers: HashMap::new(),
            max_peers: max_peers.max(1),
            clock: 0,
        }
    }

    /// The entry for `peer`, if any.
    pub fn get(&self, peer: &PeerId) -> Option<&Entry> {
        self.peers.get(peer)
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Entry)> {
        self.peers.iter()
    }

    /// How many peers the book holds.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Notes that `peer` is useful now (connected, or added by the app), making an entry for
    /// it if there is room (pushing out another if need be). `connected` are the peers with
    /// an open connection, which are never pushed out. Returns whether the peer has an entry.
    pub fn touch(
        &mut self,
        peer: PeerId,
        discovered: Discovery,
        explicit: bool,
        connected: &HashSet<PeerId>,
    ) -> bool {
        if !self.peers.contains_key(&peer) && !self.make_room(connected) {
            return false;
        }
        self.clock += 1;
        let entry = self.peers.entry(peer).or_insert_with(|| Entry {
            addresses: Vec::new(),
            discovered,
            explicit,
            last_useful: 0,
        });
        entry.last_useful = self.clock;
        if explicit && !entry.explicit {
            entry.explicit = true;
            entry.discovered = Discovery::Static;
        }
        true
    }

    /// Adds `addr` (already [`admit`]ted) for `peer`. A peer not in the book is added if there
    /// is room. Returns whether the address is new to the book.
    pub fn add(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        origin: Origin,
        discovered: Discovery,
        connected: &HashSet<PeerId>,
    ) -> bool {
        let explicit = origin == Origin::Explicit;
        if (explicit || !self.peers.contains_key(&peer))
            && !self.touch(peer, discovered, explicit, connected)
        {
            return false;
        }
        let Some(entry) = self.peers.get_mut(&peer) else {
            return false;
        };
        if let Some(known) = entry.addresses.iter_mut().find(|(a, _)| *a == addr) {
            // The same address from a more trusted origin takes that origin.
            if origin.rank() > known.1.rank() {
                known.1 = origin;
            }
            return false;
        }
        if entry.addresses.len() >= MAX_ADDRS_PER_PEER {
            let victim = entry
                .addresses
                .iter()
                .position(|(_, o)| o.rank() < origin.rank())
                .or_else(|| {
                    entry
                        .addresses
                        .iter()
                        .position(|(_, o)| o.rank() == origin.rank())
                });
            match victim {
                Some(i) => {
                    entry.addresses.remove(i);
                }
                None => return false,
            }
        }
        entry.addresses.push((addr, origin));
        true
    }

    /// Pushes out the least recently useful peer that was not added by the app and is not
    /// connected, if the book is full. Returns whether there is room for one more.
    fn make_room(&mut self, connected: &HashSet<PeerId>) -> bool {
        if self.peers.len() < self.max_peers {
            return true;
        }
        let victim = self
            .peers
            .iter()
            .filter(|(p, e)| !e.explicit && !connected.contains(p))
            .min_by_key(|(_, e)| e.last_useful)
            .map(|(p, _)| *p);
        match victim {
            Some(p) => {
                self.peers.remove(&p);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn scopes() {
        let scope = |s: &str| Scope::of(s.parse().expect("ip"));
        assert_eq!(scope("127.0.0.1"), Some(Scope::Loopback));
        assert_eq!(scope("::1"), Some(Scope::Loopback));
        assert_eq!(scope("::ffff:127.0.0.1"), Some(Scope::Loopback));
        assert_eq!(scope("169.254.1.1"), Some(Scope::LinkLocal));
        assert_eq!(scope("fe80::1"), Some(Scope::LinkLocal));
        assert_eq!(scope("192.168.1.2"), Some(Scope::Private));
        assert_eq!(scope("10.0.0.1"), Some(Scope::Private));
        assert_eq!(scope("100.64.0.1"), Some(Scope::Private));
        assert_eq!(scope("fd00::1"), Some(Scope::Private));
        assert_eq!(scope("8.8.8.8"), Some(Scope::Public));
        assert_eq!(scope("2001:4860::1"), Some(Scope::Public));
        for never in [
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "224.0.0.251",
            "239.1.1.1",
            "255.255.255.255",
            "240.0.0.1",
            "ff02::fb",
            "::ffff:224.0.0.1",
        ] {
            assert_eq!(scope(never), None, "{never}");
        }
    }

    #[test]
    fn what_each_origin_may_name() {
        let p = peer();
        let with_id = |s: &str| addr(&format!("{s}/p2p/{p}"));
        let loopback = with_id("/ip4/127.0.0.1/tcp/4001");
        let link = with_id("/ip4/169.254.3.4/tcp/4001");
        let lan = with_id("/ip4/192.168.1.9/tcp/4001");
        let public = with_id("/ip4/8.8.8.8/tcp/4001");
        let bare = |a: &Multiaddr| admit(p, a, Origin::Explicit).expect("dialable");
        let cases = [
            (Origin::Explicit, [true, true, true, true]),
            (Origin::Remembered, [true, true, true, true]),
            (Origin::Mdns, [false, true, true, true]),
            (Origin::Itself(Scope::Loopback), [true, true, true, true]),
            (Origin::Itself(Scope::LinkLocal), [false, true, true, true]),
            (Origin::Itself(Scope::Private), [false, false, true, true]),
            (Origin::Itself(Scope::Public), [false, false, true, true]),
            (Origin::Told(Scope::Loopback), [true, false, true, true]),
            (Origin::Told(Scope::Private), [false, false, true, true]),
            (Origin::Told(Scope::Public), [false, false, true, true]),
        ];
        for (origin, allowed) in cases {
            for (a, ok) in [&loopback, &link, &lan, &public].into_iter().zip(allowed) {
                assert_eq!(
                    admit(p, a, origin),
                    ok.then(|| bare(a)),
                    "{a} from {origin:?}"
                );
            }
        }
    }

    #[test]
    fn only_our_transports_and_the_right_peer() {
        let p = peer();
        let other = peer();
        let ok = addr("/ip4/192.168.1.9/tcp/4001");
        assert_eq!(
            admit(p, &ok, Origin::Itself(Scope::Private)),
            Some(ok.clone())
        );
        // A third party must say whom the address is for.
        assert_eq!(admit(p, &ok, Origin::Told(Scope::Private)), None);
        let refused = [
            format!("/ip4/192.168.1.9/tcp/4001/p2p/{other}"),
            "/ip4/192.168.1.9/tcp/0".to_owned(),
            "/ip4/0.0.0.0/tcp/4001".to_owned(),
            "/ip6/::/tcp/4001".to_owned(),
            "/ip4/224.0.0.1/tcp/4001".to_owned(),
            "/ip4/255.255.255.255/tcp/4001".to_owned(),
            "/dns4/example.org/tcp/4001".to_owned(),
            "/ip4/192.168.1.9/tcp/4001/ws".to_owned(),
            "/ip4/192.168.1.9/udp/4001".to_owned(),
            "/ip4/192.168.1.9".to_owned(),
            // Circuits: the relay must not be the peer, the address must not end in a third
            // peer's id, and the relay's id must come before `/p2p-circuit`.
            format!("/ip4/192.168.1.9/tcp/4001/p2p/{p}/p2p-circuit/p2p/{p}"),
            format!("/ip4/192.168.1.9/tcp/4001/p2p/{p}/p2p-circuit"),
            format!("/ip4/192.168.1.9/tcp/4001/p2p/{other}/p2p-circuit/p2p/{other}"),
            format!("/ip4/192.168.1.9/tcp/4001/p2p-circuit/p2p/{p}"),
            format!("/ip4/192.168.1.9/tcp/4001/p2p/{other}/p2p-circuit/p2p/{p}/p2p/{p}"),
        ];
        for a in refused {
            assert_eq!(admit(p, &addr(&a), Origin::Explicit), None, "{a}");
        }
    }

    #[test]
    fn a_circuit_address_is_judged_by_its_relay() {
        let p = PeerId::random();
        let relay = PeerId::random();
        let public = addr(&format!(
            "/ip4/203.0.113.7/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{p}"
        ));
        let bare = addr(&format!(
            "/ip4/203.0.113.7/tcp/4001/p2p/{relay}/p2p-circuit"
        ));
        for origin in [
            Origin::Explicit,
            Origin::Itself(Scope::Public),
            Origin::Told(Scope::Public),
        ] {
            assert_eq!(admit(p, &public, origin), Some(bare.clone()), "{origin:?}");
        }
        // Without the peer's id: from the peer itself, not from a third party.
        assert_eq!(
            admit(p, &bare, Origin::Itself(Scope::Public)),
            Some(bare.clone())
        );
        assert_eq!(admit(p, &bare, Origin::Told(Scope::Public)), None);
        // A relay on this host's loopback is named only by the app or over loopback.
        let looped = addr(&format!(
            "/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{p}"
        ));
        assert!(admit(p, &looped, Origin::Explicit).is_some());
        assert_eq!(admit(p, &looped, Origin::Itself(Scope::Public)), None);
        assert_eq!(admit(p, &looped, Origin::Told(Scope::Private)), None);
    }

    #[test]
    fn addresses_per_peer_are_bounded_and_third_parties_push_out_nothing_first_hand() {
        let mut book = Book::new(16);
        let none = HashSet::new();
        let p = peer();
        let own = |i: usize| {
            addr(&format!(
                "/ip4/192.168.{}.{}/tcp/4001",
                i / 200,
                i % 200 + 1
            ))
        };
        let told = |i: usize| addr(&format!("/ip4/8.8.4.{i}/tcp/4001"));
        for i in 0..MAX_ADDRS_PER_PEER {
            assert!(book.add(
                p,
                own(i),
                Origin::Itself(Scope::Private),
                Discovery::Inbound,
                &none
            ));
        }
        for i in 0..100 {
            assert!(!book.add(
                p,
                told(i),
                Origin::Told(Scope::Private),
                Discovery::Exchange,
                &none
            ));
        }
        assert_eq!(book.get(&p).unwrap().first_hand().len(), MAX_ADDRS_PER_PEER);
        // The peer's own newer addresses push out its oldest.
        for i in 100..1000 {
            book.add(
                p,
                own(i),
                Origin::Itself(Scope::Private),
                Discovery::Inbound,
                &none,
            );
        }
        let kept = book.get(&p).unwrap().addresses();
        assert_eq!(kept.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(kept.last(), Some(&own(999)));
        // An address the app gives goes in whatever is there.
        let given = addr("/ip4/127.0.0.1/tcp/9");
        assert!(book.add(p, given.clone(), Origin::Explicit, Discovery::Static, &none));
        assert!(book.get(&p).unwrap().addresses().contains(&given));
        assert!(book.get(&p).unwrap().explicit);
    }

    #[test]
    fn peers_are_bounded_and_the_least_recently_useful_go_first() {
        let mut book = Book::new(4);
        let mut connected = HashSet::new();
        let a = addr("/ip4/192.168.1.1/tcp/1");
        let kept = peer();
        book.add(
            kept,
            a.clone(),
            Origin::Explicit,
            Discovery::Static,
            &connected,
        );
        let online = peer();
        book.add(online, a.clone(), Origin::Mdns, Discovery::Mdns, &connected);
        connected.insert(online);
        let first = peer();
        book.add(first, a.clone(), Origin::Mdns, Discovery::Mdns, &connected);
        for _ in 0..1000 {
            book.add(peer(), a.clone(), Origin::Mdns, Discovery::Mdns, &connected);
            assert!(book.len() <= 4);
        }
        assert!(book.get(&kept).is_some(), "an explicit peer was pushed out");
        assert!(
            book.get(&online).is_some(),
            "a connected peer was pushed out"
        );
        assert!(book.get(&first).is_none(), "the oldest stayed");
    }
}
