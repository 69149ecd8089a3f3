//! Catch-up when peers meet again: each side pulls what it missed in every shared room from
//! the other, with no new event sent and nothing left in either outbox.

use neurite_core::storage::catchup;
use neurite_tests::{TestNode, User, timeline};
use serde_json::json;

/// Alice on `a` and bob on `b` joined to one room; returns (alice, bob, room).
async fn chat_room(a: &TestNode, b: &TestNode) -> (User, User, String) {
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice
        .create_room(json!({ "name": "Catch-up", "preset": "private_chat" }))
        .await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    bob.join(&room).await;
    alice
        .sync_until(None, |s| {
            s["rooms"]["join"][&room]["summary"]["m.joined_member_count"] == 2
        })
        .await;
    (alice, bob, room)
}

/// Empties `node`'s outbox for `dest` after checking that `expected` events were waiting.
async fn drop_outbox(node: &TestNode, dest: &str, expected: usize) {
    let db = node.node().services().db.clone();
    let d = dest.to_owned();
    let queued = db.read(move |c| catchup::queued_for(c, &d)).await.unwrap();
    assert_eq!(queued, expected, "events queued for the absent peer");
    let d = dest.to_owned();
    let dropped = db
        .write(move |txn| catchup::drop_queue(txn, &d))
        .await
        .unwrap();
    assert_eq!(dropped, expected);
}

async fn queued(node: &TestNode, dest: &str) -> usize {
    let d = dest.to_owned();
    node.node()
        .services()
        .db
        .read(move |c| catchup::queued_for(c, &d))
        .await
        .unwrap()
}

/// Syncs as `user` until every one of `expected` is in the room's timeline; returns the
/// message event ids seen, in timeline order.
async fn wait_for_all(user: &User, room: &str, expected: &[String]) -> Vec<String> {
    // Room for everything in one timeline, so a burst is never cut to its newest events.
    let filter = json!({ "room": { "timeline": { "limit": 200 } } });
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let deadline = tokio::time::Instant::now() + neurite_tests::WAIT;
    while !expected.iter().all(|id| seen.contains(id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "missed messages never arrived: saw {} of {}",
            expected.iter().filter(|id| seen.contains(*id)).count(),
            expected.len()
        );
        let s = user.sync_filtered(&filter, since.as_deref(), 1000).await;
        for e in timeline(&s, room) {
            if let Some(id) = e["event_id"].as_str() {
                seen.push(id.to_owned());
            }
        }
        since = s["next_batch"].as_str().map(str::to_owned);
    }
    seen.into_iter()
        .filter(|id| expected.contains(id))
        .collect()
}

#[tokio::test]
async fn both_sides_catch_up_on_connect_without_any_outbox() {
    let (a, b) = neurite_tests::node_pair().await;
    let (alice, _bob, room) = chat_room(&a, &b).await;
    let (a_name, b_name) = (a.server_name(), b.server_name());
    let a_addr = a.node().p2p_addrs()[0].parse().expect("a's address");
    let dir = b.stop().await;

    // A writes 20 messages while B is away, and then forgets it ever had to deliver them.
    let mut from_alice = Vec::new();
    for i in 0..20 {
        from_alice.push(alice.send_text(&room, &format!("alice {i}")).await);
    }
    drop_outbox(&a, &b_name, 20).await;

    // B runs offline (no network at all) and bob writes 5 messages A never hears of.
    let b = TestNode::start_in(dir, |c| {
        c.p2p_listen.clear();
        c.static_peers.clear();
    })
    .await;
    assert!(b.node().p2p().is_none(), "B is offline");
    let bob = b.login("bob", "correct horse").await;
    let mut from_bob = Vec::new();
    for i in 0..5 {
        from_bob.push(bob.send_text(&room, &format!("bob {i}")).await);
    }
    drop_outbox(&b, &a_name, 5).await;
    let dir = b.stop().await;

    // B comes back online and dials A. Nobody sends anything: catch-up alone must converge.
    let b = TestNode::start_in(dir, |c| c.static_peers = vec![a_addr]).await;
    let bob = b.login("bob", "correct horse").await;
    assert_eq!(
        wait_for_all(&bob, &room, &from_alice).await,
        from_alice,
        "bob sees alice's messages, in order"
    );
    assert_eq!(
        wait_for_all(&alice, &room, &from_bob).await,
        from_bob,
        "alice sees bob's messages, in order"
    );
    assert_eq!(queued(&a, &b_name).await, 0, "A's outbox played no part");
    assert_eq!(queued(&b, &a_name).await, 0, "B's outbox played no part");
}

#[tokio::test]
async fn extremities_endpoint_lists_only_shared_rooms() {
    let (a, b) = neurite_tests::node_pair().await;
    let (alice, _bob, room) = chat_room(&a, &b).await;
    let private = alice.create_room(json!({ "name": "Alone" })).await;
    let fed = a
        .node()
        .services()
        .federation()
        .expect("federation")
        .clone();
    let resp = fed
        .request(
            &b.server_name(),
            reqwest::Method::GET,
            neurite_core::federation::catchup::EXTREMITIES_PATH,
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let rooms = resp.body["rooms"].as_object().expect("rooms object");
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    assert!(rooms[&room].as_array().is_some_and(|ids| !ids.is_empty()));
    assert!(!rooms.contains_key(&private));
}
