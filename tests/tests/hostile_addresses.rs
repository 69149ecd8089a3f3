//! Address book poisoning: a hostile peer ([`EvilPeer`], a real libp2p swarm on loopback)
//! announces junk addresses for itself over identify and for others over peer exchange. The
//! node's address book must stay bounded, and the node must dial only addresses their origin
//! may name (`core/src/p2p/book.rs` has the policy; its unit tests cover the scopes that a
//! loopback-only test cannot, such as a peer reached over the LAN naming loopback).

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use neurite_core::{
    identity::Identity,
    p2p::{PEERS_PROTOCOL, PeerInfo},
};
use neurite_tests::{TestNode, WAIT, enc, evil::EvilPeer, serde_json};
use tokio::net::TcpListener;

const IDENTIFY: StreamProtocol = StreamProtocol::new("/ipfs/id/1.0.0");
const IDENTIFY_PUSH: StreamProtocol = StreamProtocol::new("/ipfs/id/push/1.0.0");

/// What `node`'s address book lists.
async fn book(node: &TestNode) -> Vec<PeerInfo> {
    node.node().p2p().expect("p2p").peers().await
}

/// Polls `node`'s address book until `done` holds (bounded by [`WAIT`]); returns it then.
async fn book_until(
    node: &TestNode,
    what: &str,
    done: impl Fn(&[PeerInfo]) -> bool,
) -> Vec<PeerInfo> {
    let wait = async {
        loop {
            let peers = book(node).await;
            if done(&peers) {
                return peers;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("the address book never showed {what}"))
}

/// The unsigned varint libp2p frames its messages with.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// An identify message (protobuf, length-prefixed): the public key and `addrs` as listen
/// addresses.
fn identify_message(public_key: &[u8], addrs: &[Multiaddr]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut field = |number: usize, bytes: &[u8]| {
        varint(number << 3 | 2, &mut body);
        varint(bytes.len(), &mut body);
        body.extend_from_slice(bytes);
    };
    field(1, public_key);
    for a in addrs {
        field(2, &a.to_vec());
    }
    let mut framed = Vec::new();
    varint(body.len(), &mut framed);
    framed.extend_from_slice(&body);
    assert!(framed.len() <= 4096, "identify messages are at most 4 KiB");
    framed
}

/// `n` junk addresses: loopback ports, multicast, unspecified, reserved and broadcast IPs,
/// other hosts and a DNS name, in turn.
fn junk(n: usize, salt: u16) -> Vec<Multiaddr> {
    (0..n)
        .map(|i| {
            let port = 1000 + salt.wrapping_mul(300) + i as u16;
            let a = match i % 6 {
                0 => format!("/ip4/127.0.0.1/tcp/{port}"),
                1 => format!("/ip4/224.0.0.{}/tcp/{port}", i % 250),
                2 => format!("/ip4/0.0.0.0/tcp/{port}"),
                3 => format!("/ip4/255.255.255.255/tcp/{port}"),
                4 => format!("/ip4/203.0.113.{}/tcp/{port}", i % 250),
                _ => format!("/dns4/a{i}.example/tcp/{port}"),
            };
            a.parse().expect("multiaddr")
        })
        .collect()
}

/// Whether a multiaddr starts with an IP no one may make the node dial.
fn never_dialled(a: &Multiaddr) -> bool {
    let s = a.to_string();
    s.starts_with("/ip4/224.")
        || s.starts_with("/ip4/0.0.0.0")
        || s.starts_with("/ip4/255.")
        || s.starts_with("/dns")
}

#[tokio::test]
async fn a_peer_announcing_thousands_of_addresses_for_itself_gets_eight_and_no_junk() {
    let node = TestNode::start().await;
    let (evil, mut incoming) = EvilPeer::connect_accepting(&node, &[IDENTIFY]).await;
    let key = evil.public_key_protobuf();
    // The node asks who the peer is as it connects: the answer is junk already.
    let mut asked = incoming.remove(0);
    let first = identify_message(&key, &junk(300, 0));
    tokio::spawn(async move {
        while let Some((_, mut stream)) = asked.next().await {
            let _ = stream.write_all(&first).await;
            let _ = stream.close().await;
        }
    });
    book_until(&node, "the peer's first addresses", |peers| {
        peers
            .iter()
            .any(|p| p.peer_id == evil.peer_id() && !p.addresses.is_empty())
    })
    .await;
    // Then it pushes 3,000 more, one message after the other (each read before the next).
    for round in 1..=10u16 {
        let mut stream = evil.open_protocol_stream(IDENTIFY_PUSH).await;
        stream
            .write_all(&identify_message(&key, &junk(300, round)))
            .await
            .expect("push");
        stream.close().await.expect("close");
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
            .await
            .expect("the node never finished reading a push")
            .ok();
    }
    let last: Multiaddr = "/ip4/127.0.0.1/tcp/65000".parse().expect("multiaddr");
    let mut stream = evil.open_protocol_stream(IDENTIFY_PUSH).await;
    stream
        .write_all(&identify_message(&key, std::slice::from_ref(&last)))
        .await
        .expect("push");
    stream.close().await.expect("close");

    let peers = book_until(&node, "the last pushed address", |peers| {
        peers
            .iter()
            .any(|p| p.peer_id == evil.peer_id() && p.addresses.contains(&last))
    })
    .await;
    let entry = peers
        .iter()
        .find(|p| p.peer_id == evil.peer_id())
        .expect("the peer is in the book");
    assert!(
        entry.addresses.len() <= 8,
        "{} addresses kept: {:?}",
        entry.addresses.len(),
        entry.addresses
    );
    let bad: Vec<_> = entry
        .addresses
        .iter()
        .filter(|a| never_dialled(a))
        .collect();
    assert!(bad.is_empty(), "junk kept: {bad:?}");
    // The peer is on loopback, so its loopback addresses are fair: they are what is kept.
    assert!(
        entry
            .addresses
            .iter()
            .all(|a| a.to_string().starts_with("/ip4/127.0.0.1/tcp/")
                || a.to_string().starts_with("/ip4/203.0.113."))
    );
    assert_eq!(peers.len(), 1, "{peers:?}");
}

#[tokio::test]
async fn the_book_holds_a_bounded_number_of_peers() {
    let node = TestNode::start_with(|c| c.federation_limits.max_known_peers = 4).await;
    let mut evils = Vec::new();
    for _ in 0..10 {
        evils.push(EvilPeer::connect(&node).await);
    }
    // Connected peers are listed even when the book has no room for them.
    let peers = book_until(&node, "ten connected peers", |peers| {
        peers.iter().filter(|p| p.connected).count() == 10
    })
    .await;
    assert_eq!(peers.len(), 10);
    drop(evils);
    let peers = book_until(&node, "every peer gone", |peers| {
        peers.iter().all(|p| !p.connected)
    })
    .await;
    assert!(peers.len() <= 4, "{} peers kept", peers.len());
    // Room is made for a new peer by pushing out one that is gone.
    let newcomer = EvilPeer::connect(&node).await;
    let peers = book_until(&node, "the newcomer", |peers| {
        peers.iter().any(|p| p.peer_id == newcomer.peer_id())
    })
    .await;
    assert!(peers.len() <= 4, "{} peers kept", peers.len());
}

/// A TCP listener on a loopback port that notes every connection made to it (and closes it).
struct Trap {
    port: u16,
    hits: tokio::sync::watch::Receiver<usize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Trap {
    async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (tx, hits) = tokio::sync::watch::channel(0usize);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
                tx.send_modify(|n| *n += 1);
            }
        });
        Self {
            port,
            hits,
            _task: task,
        }
    }

    fn hits(&self) -> usize {
        *self.hits.borrow()
    }

    /// Waits (bounded by [`WAIT`]) for a first connection.
    async fn wait_for_hit(&self) {
        let mut hits = self.hits.clone();
        tokio::time::timeout(WAIT, hits.wait_for(|n| *n > 0))
            .await
            .expect("the node never dialled the address it was given")
            .expect("trap stopped");
    }
}

/// Answers every peer-address question on `incoming` with `answer`; counts the questions.
fn answer_questions(
    mut incoming: libp2p_stream::IncomingStreams,
    answer: Vec<String>,
) -> tokio::sync::watch::Receiver<usize> {
    let (tx, asked) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tx.send_modify(|n| *n += 1);
            let body = serde_json::to_vec(&answer).expect("JSON");
            tokio::spawn(async move {
                let mut question = Vec::new();
                let _ = (&mut stream).take(128).read_to_end(&mut question).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.close().await;
            });
        }
    });
    asked
}

/// Asks the node for the addresses it knows of `peer`, as another peer would.
async fn ask_node(evil: &EvilPeer, peer: PeerId) -> Vec<String> {
    let mut stream = evil.open_protocol_stream(PEERS_PROTOCOL).await;
    stream
        .write_all(peer.to_string().as_bytes())
        .await
        .expect("ask");
    stream.close().await.expect("close");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("no answer in time")
        .expect("answer");
    serde_json::from_slice(&answer).expect("a JSON list")
}

#[tokio::test]
async fn a_third_party_answer_is_dialled_only_where_it_may_point() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let (evil, mut incoming) = EvilPeer::connect_accepting(&node, &[PEERS_PROTOCOL]).await;

    // A server the node has never seen, which the evil peer claims to know.
    let target = Identity::from_seed(&[7u8; 32]).expect("identity");
    let target_peer = target.peer_id();
    let someone_else = PeerId::random();
    let (good, wrong_peer, no_peer) = (Trap::new().await, Trap::new().await, Trap::new().await);
    let answer = vec![
        // Another peer's address, passed off as the target's.
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{someone_else}", wrong_peer.port),
        // An address that does not say whose it is.
        format!("/ip4/127.0.0.1/tcp/{}", no_peer.port),
        format!("/ip4/224.0.0.1/tcp/{}/p2p/{target_peer}", good.port),
        format!("/ip4/0.0.0.0/tcp/{}/p2p/{target_peer}", good.port),
        format!("/ip4/255.255.255.255/tcp/{}/p2p/{target_peer}", good.port),
        format!("/ip4/169.254.1.1/tcp/{}/p2p/{target_peer}", good.port),
        format!("/dns4/localhost/tcp/{}/p2p/{target_peer}", good.port),
        // The one address the node may take: the evil peer is itself on loopback.
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{target_peer}", good.port),
    ];
    let asked = answer_questions(incoming.remove(0), answer);

    // Looking up an alias on that server makes the node look for it through its peers.
    let alias = format!("#room:{}", target.server_name());
    let path = format!("/_matrix/client/v3/directory/room/{}", enc(&alias));
    let (status, _) = alice.get(&path).await;
    assert_eq!(status, 404, "the server cannot be reached");
    assert_eq!(*asked.borrow(), 1, "the evil peer was asked once");

    // The permitted address was dialled...
    good.wait_for_hit().await;
    // ...and, given a moment more than that took, none of the others were: a dial of the
    // whole list goes out at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wrong_peer.hits(), 0, "dialled an address of another peer");
    assert_eq!(no_peer.hits(), 0, "dialled an address that named no peer");
    let peers = book(&node).await;
    let entry = peers
        .iter()
        .find(|p| p.peer_id == target_peer)
        .expect("the target is in the book");
    let expected: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", good.port)
        .parse()
        .expect("multiaddr");
    assert_eq!(entry.addresses, vec![expected]);

    // Looking again at once asks no one: the destination is backing off.
    let (status, _) = alice.get(&path).await;
    assert_eq!(status, 404);
    assert_eq!(*asked.borrow(), 1, "the evil peer was asked again at once");

    // What a third party told the node, it does not pass on.
    assert!(ask_node(&evil, target_peer).await.is_empty());
    // What a peer said of itself, it does, bounded and naming the peer.
    let node_addr: Multiaddr = node.node().p2p_addrs()[0].parse().expect("multiaddr");
    let other = TestNode::start_with(|c| c.static_peers = vec![node_addr]).await;
    let other_peer: PeerId = other.node().peer_id().parse().expect("peer id");
    book_until(&node, "the other node's own addresses", |peers| {
        peers
            .iter()
            .any(|p| p.peer_id == other_peer && !p.addresses.is_empty())
    })
    .await;
    let about_other = ask_node(&evil, other_peer).await;
    assert!(
        !about_other.is_empty() && about_other.len() <= 8,
        "{about_other:?}"
    );
    for a in &about_other {
        assert!(a.ends_with(&format!("/p2p/{other_peer}")), "{a}");
    }
}
