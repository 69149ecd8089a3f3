//! What the library tells the app about other peers: [`PeerInfo`] and [`Discovery`], and
//! their translation from the core's types.

use neurite_core::p2p;

/// How a peer became known to the homeserver.
///
/// New ways of finding peers become new variants, so an app that switches on this should
/// keep a branch for the ones it does not know yet where its language allows (Kotlin's
/// `else`, Swift's `default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Discovery {
    /// Configured as a static peer, or added by the app with `add_peer`.
    Static,
    /// Found by mDNS on the local network.
    Mdns,
    /// It connected to this homeserver first.
    Inbound,
    /// Learnt from another peer (peer exchange).
    Exchange,
    /// A relay this homeserver keeps a reservation on (`HomeserverConfig.relays`).
    Relay,
}

/// How a connected peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum PeerPath {
    /// Over a connection of its own: the same network, a public address, or a hole punched
    /// through both NATs.
    Direct,
    /// Only through a relay.
    Relayed,
}

impl From<p2p::Path> for PeerPath {
    fn from(p: p2p::Path) -> Self {
        match p {
            p2p::Path::Direct => Self::Direct,
            p2p::Path::Relayed => Self::Relayed,
        }
    }
}

impl From<p2p::Discovery> for Discovery {
    fn from(d: p2p::Discovery) -> Self {
        match d {
            p2p::Discovery::Static => Self::Static,
            p2p::Discovery::Mdns => Self::Mdns,
            p2p::Discovery::Inbound => Self::Inbound,
            p2p::Discovery::Exchange => Self::Exchange,
            p2p::Discovery::Relay => Self::Relay,
        }
    }
}

/// A peer the homeserver knows of.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PeerInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// The peer's Matrix server name, if it is a Neurite node.
    pub server_name: Option<String>,
    /// Known multiaddrs (without the `/p2p/` suffix).
    pub addresses: Vec<String>,
    /// Whether a connection is open now.
    pub connected: bool,
    /// How the peer became known.
    pub discovered: Discovery,
    /// How it is reached while connected (`None` when not connected).
    pub path: Option<PeerPath>,
}

impl From<p2p::PeerInfo> for PeerInfo {
    fn from(p: p2p::PeerInfo) -> Self {
        Self {
            peer_id: p.peer_id.to_string(),
            server_name: p.server_name,
            addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
            connected: p.connected,
            discovered: p.discovered.into(),
            path: p.path.map(PeerPath::from),
        }
    }
}

impl PeerInfo {
    /// What is known of a peer that connected but is not (or no longer) in the address book:
    /// its id and server name, connected, found because it connected.
    pub(crate) fn connected_inbound(p2p: &p2p::P2p, peer: &p2p::PeerId, path: p2p::Path) -> Self {
        Self {
            peer_id: peer.to_string(),
            server_name: p2p.server_name_of(peer),
            addresses: Vec::new(),
            connected: true,
            discovered: Discovery::Inbound,
            path: Some(path.into()),
        }
    }
}
