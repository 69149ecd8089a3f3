//! Two nodes on loopback chat across servers: invite, join, messages both ways in order,
//! room state converging, and delivery to a peer that was away.

use neurite_tests::{TestNode, has_event, timeline};
use serde_json::json;

async fn pair() -> (TestNode, TestNode) {
    let b = TestNode::start().await;
    let b_addr = b.node().p2p_addrs()[0].parse().expect("b's address");
    let a = TestNode::start_with(|c| c.static_peers = vec![b_addr]).await;
    (a, b)
}

#[tokio::test]
async fn invite_join_and_chat_across_two_nodes() {
    let (a, b) = pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice
        .create_room(json!({ "name": "Across", "preset": "private_chat" }))
        .await;
    alice.invite(&room, &bob.user_id).await;

    let invited = bob
        .sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let invite_state = &invited["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        invite_state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Across"),
        "invite state names the room: {invite_state}"
    );
    bob.join(&room).await;

    // Bob sees the room's state and history up to his join.
    let joined = bob
        .sync_until(None, |s| s["rooms"]["join"][&room].is_object())
        .await;
    let state = &joined["rooms"]["join"][&room]["state"]["events"];
    assert!(
        state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name"),
        "{state}"
    );
    let since_b = joined["next_batch"].as_str().unwrap().to_owned();

    // Alice learns of Bob's join through the room.
    alice
        .sync_until(None, |s| {
            timeline(s, &room)
                .iter()
                .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
                || s["rooms"]["join"][&room]["state"]["events"]
                    .as_array()
                    .is_some_and(|a| {
                        a.iter().any(|e| {
                            e["state_key"] == bob.user_id.as_str()
                                && e["content"]["membership"] == "join"
                        })
                    })
        })
        .await;

    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(alice.send_text(&room, &format!("alice {i}")).await);
    }
    let mut seen = Vec::new();
    let mut since = Some(since_b);
    while seen.len() < 3 {
        let s = bob
            .sync_until(since.as_deref(), |s| !timeline(s, &room).is_empty())
            .await;
        for e in timeline(&s, &room) {
            if e["type"] == "m.room.message" {
                seen.push(e["event_id"].as_str().unwrap().to_owned());
            }
        }
        since = s["next_batch"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, sent, "bob sees alice's messages in order");

    let reply = bob.send_text(&room, "hi alice").await;
    alice
        .sync_until(None, |s| has_event(s, &room, &reply))
        .await;

    // State converges: a topic set on A shows on B; B's member (power 0) may not set it.
    let topic_path = format!("/rooms/{}/state/m.room.topic", neurite_tests::enc(&room));
    alice
        .put_ok(&topic_path, json!({ "topic": "from alice" }))
        .await;
    let (status, _) = bob.put(&topic_path, json!({ "topic": "from bob" })).await;
    assert_eq!(status, 403, "bob lacks the power to set the topic");
    let deadline = tokio::time::Instant::now() + neurite_tests::WAIT;
    let mut since: Option<String> = None;
    loop {
        let (status, topic) = bob.get(&topic_path).await;
        if status == 200 && topic["topic"] == "from alice" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "topic did not converge: {topic}"
        );
        // Wait for the next change on B rather than polling blindly.
        let s = bob.sync(since.as_deref(), 1000).await;
        since = s["next_batch"].as_str().map(str::to_owned);
    }
}

/// Sets up alice on `a` and bob on `b` joined to one room; returns (alice, bob, room).
async fn chat_room(
    a: &TestNode,
    b: &TestNode,
) -> (neurite_tests::User, neurite_tests::User, String) {
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

#[tokio::test]
async fn messages_sent_while_a_peer_is_away_arrive_when_it_returns() {
    let (a, b) = pair().await;
    let (alice, _bob, room) = chat_room(&a, &b).await;
    let a_addr = a.node().p2p_addrs()[0].parse().expect("a's address");
    let dir = b.stop().await;

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            alice
                .send_text(&room, &format!("while you were away {i}"))
                .await,
        );
    }

    // B comes back (on a new port) and dials A; nobody sends anything new.
    let b = TestNode::start_in(dir, |c| c.static_peers = vec![a_addr]).await;
    let bob = b.login("bob", "correct horse").await;
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let deadline = tokio::time::Instant::now() + neurite_tests::WAIT;
    while !sent.iter().all(|id| seen.contains(id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "missed messages never arrived: {seen:?}"
        );
        let s = bob.sync(since.as_deref(), 1000).await;
        for e in timeline(&s, &room) {
            if let Some(id) = e["event_id"].as_str() {
                seen.push(id.to_owned());
            }
        }
        since = s["next_batch"].as_str().map(str::to_owned);
    }
    let order: Vec<&String> = seen.iter().filter(|id| sent.contains(id)).collect();
    assert_eq!(
        order,
        sent.iter().collect::<Vec<_>>(),
        "in the order they were sent"
    );
}
