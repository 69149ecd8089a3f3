//! Three nodes on loopback in one room, where A and C only know B: peer exchange lets A and
//! C find each other, and they keep chatting when B goes away.

use neurite_core::p2p::Discovery;
use neurite_tests::{TestNode, User, timeline};
use serde_json::json;

/// Syncs as `user` until a message with `body` shows up in `room`.
async fn sees(user: &User, room: &str, body: &str) {
    user.sync_until(None, |s| {
        timeline(s, room)
            .iter()
            .any(|e| e["content"]["body"] == body)
    })
    .await;
}

/// Waits until `node` has an open connection to `peer`.
async fn connected(node: &TestNode, peer: &str) {
    let p2p = node.node().p2p().expect("p2p").clone();
    let mut events = p2p.subscribe();
    let deadline = tokio::time::Instant::now() + neurite_tests::WAIT;
    loop {
        if p2p
            .peers()
            .await
            .iter()
            .any(|p| p.connected && p.peer_id.to_string() == peer)
        {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no connection to {peer}");
        let _ = tokio::time::timeout(left, events.recv()).await;
    }
}

#[tokio::test]
async fn three_nodes_find_each_other_through_the_middle_and_survive_it_leaving() {
    let b = TestNode::start().await;
    let b_addr: neurite_core::p2p::Multiaddr = b.node().p2p_addrs()[0].parse().unwrap();
    let a = TestNode::start_with(|c| c.static_peers = vec![b_addr.clone()]).await;
    let c = TestNode::start_with(|c| c.static_peers = vec![b_addr]).await;
    let (a_peer, c_peer) = (a.node().peer_id(), c.node().peer_id());

    // Neither end knows the other's address.
    let knows = |node: &TestNode, peer: String| {
        let p2p = node.node().p2p().unwrap().clone();
        async move {
            p2p.peers()
                .await
                .iter()
                .any(|p| p.peer_id.to_string() == peer && !p.addresses.is_empty())
        }
    };
    assert!(!knows(&a, c_peer.clone()).await);
    assert!(!knows(&c, a_peer.clone()).await);

    let bob = b.register("bob").await;
    let alice = a.register("alice").await;
    let carol = c.register("carol").await;
    let room = bob
        .create_room(json!({ "name": "Mesh", "preset": "private_chat" }))
        .await;
    for user in [&alice, &carol] {
        bob.invite(&room, &user.user_id).await;
        user.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
            .await;
        user.join(&room).await;
    }
    bob.sync_until(None, |s| {
        s["rooms"]["join"][&room]["summary"]["m.joined_member_count"] == 3
    })
    .await;

    // Every message reaches the other two.
    alice.send_text(&room, "from A").await;
    sees(&bob, &room, "from A").await;
    sees(&carol, &room, "from A").await;
    carol.send_text(&room, "from C").await;
    sees(&alice, &room, "from C").await;
    sees(&bob, &room, "from C").await;
    bob.send_text(&room, "from B").await;
    sees(&alice, &room, "from B").await;
    sees(&carol, &room, "from B").await;

    // A and C are now directly connected, and A learnt C's address by asking B.
    connected(&a, &c_peer).await;
    connected(&c, &a_peer).await;
    let learnt = a.node().p2p().unwrap().peers().await;
    let c_entry = learnt
        .iter()
        .find(|p| p.peer_id.to_string() == c_peer)
        .expect("A knows C");
    assert!(!c_entry.addresses.is_empty(), "A has an address for C");
    assert!(
        matches!(c_entry.discovered, Discovery::Exchange | Discovery::Inbound),
        "{:?}",
        c_entry.discovered
    );

    // B goes away; A and C still chat directly.
    b.stop().await;
    alice.send_text(&room, "A without B").await;
    sees(&carol, &room, "A without B").await;
    carol.send_text(&room, "C without B").await;
    sees(&alice, &room, "C without B").await;
}
