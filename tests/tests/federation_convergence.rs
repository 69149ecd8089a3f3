//! Four nodes in one room, every member sending at once: events reach servers before the
//! events they depend on (a join not seen yet, a message citing another server's message),
//! wait for them, and every node ends with every message and the same room state.

use std::{collections::BTreeSet, time::Duration};

use neurite_tests::{TestNode, User, WAIT, enc};
use reqwest::StatusCode;
use serde_json::json;

/// The room state as `(type, state_key, event_id)` triples.
async fn state_of(user: &User, room: &str) -> BTreeSet<(String, String, String)> {
    let state = user.get_ok(&format!("/rooms/{}/state", enc(room))).await;
    state
        .as_array()
        .expect("state is a list")
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["state_key"].as_str().unwrap_or_default().to_owned(),
                e["event_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The events of `ids` that `user`'s node does not have.
async fn missing_on(user: &User, room: &str, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let (status, _) = user
            .get(&format!("/rooms/{}/event/{}", enc(room), enc(id)))
            .await;
        if status != StatusCode::OK {
            out.push(id.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_from_every_member_converges_on_every_node() {
    // A hub and three nodes that only know the hub.
    let hub = TestNode::start().await;
    let hub_addr: neurite_core::p2p::Multiaddr = hub.node().p2p_addrs()[0].parse().unwrap();
    let mut nodes = vec![hub];
    for _ in 0..3 {
        let addr = hub_addr.clone();
        nodes.push(TestNode::start_with(|c| c.static_peers = vec![addr]).await);
    }
    let mut users = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        users.push(node.register(&format!("user{i}")).await);
    }
    let room = users[0]
        .create_room(json!({ "name": "Burst", "preset": "public_chat" }))
        .await;
    for user in &users[1..] {
        users[0].invite(&room, &user.user_id).await;
        user.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
            .await;
        user.join(&room).await;
    }
    users[0]
        .sync_until(None, |s| {
            s["rooms"]["join"][&room]["summary"]["m.joined_member_count"] == 4
        })
        .await;

    // Everyone at once: five messages each, and a topic change from the creator in the middle.
    let mut sends = tokio::task::JoinSet::new();
    for (i, user) in users.iter().cloned().enumerate() {
        let room = room.clone();
        sends.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..5 {
                ids.push(user.send_text(&room, &format!("{i}.{n}")).await);
                if i == 0 && n == 2 {
                    let b = user
                        .put_ok(
                            &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
                            json!({ "topic": "in the middle of it" }),
                        )
                        .await;
                    ids.push(b["event_id"].as_str().expect("event_id").to_owned());
                }
            }
            ids
        });
    }
    let mut sent: Vec<String> = Vec::new();
    while let Some(ids) = sends.join_next().await {
        sent.extend(ids.expect("sender task"));
    }
    assert_eq!(sent.len(), 21);

    // Every node ends with every event and the same state.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let mut report = Vec::new();
        let mut states = BTreeSet::new();
        for user in &users {
            let missing = missing_on(user, &room, &sent).await;
            if !missing.is_empty() {
                report.push(format!("{} lacks {missing:?}", user.user_id));
            }
            states.insert(state_of(user, &room).await);
        }
        if report.is_empty() && states.len() == 1 {
            let state = states.into_iter().next().unwrap();
            let topic = state.iter().find(|(t, _, _)| t == "m.room.topic");
            assert!(topic.is_some(), "the topic is part of the room state");
            let members = state
                .iter()
                .filter(|(t, _, _)| t == "m.room.member")
                .count();
            assert_eq!(members, 4);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: {report:?}; {} different states",
            states.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // And every node can still send: nothing is stuck behind a wrongly rejected event.
    for (i, user) in users.iter().enumerate() {
        let (status, body) = user
            .put(
                &format!("/rooms/{}/send/m.room.message/after{i}", enc(&room)),
                json!({ "msgtype": "m.text", "body": "after" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", user.user_id);
    }
}
