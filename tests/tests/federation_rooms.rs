//! Two nodes on loopback chat across servers: invite, join, messages both ways in order,
//! room state converging, and delivery to a peer that was away.

use neurite_tests::{TestNode, has_event, timeline};
use serde_json::json;

#[tokio::test]
async fn invite_join_and_chat_across_two_nodes() {
    let (a, b) = neurite_tests::node_pair().await;
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
    let (a, b) = neurite_tests::node_pair().await;
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

/// Builds a PDU for `room` as seen by `host`, from `sender`, signed by `signer`.
async fn pdu_on(
    host: &TestNode,
    room: &str,
    sender: &str,
    signer: &neurite_core::identity::Identity,
) -> (String, serde_json::Value) {
    use neurite_core::rooms::{EventTemplate, graph};
    let services = host.node().services().clone();
    let (room, sender) = (room.to_owned(), ruma::UserId::parse(sender).unwrap());
    let db = services.db.clone();
    let seed_obj = db
        .read(move |conn| {
            let ctx = graph::RoomCtx::load(conn, &room)?;
            let tpl = EventTemplate::message(
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "forged" }),
            );
            let obj =
                graph::event_template(&ctx, &services.identity, &sender, &tpl, 1_700_000_000_000)?;
            Ok((obj, ctx.rules))
        })
        .await
        .unwrap();
    let (pdu, obj) = graph::sign_event(seed_obj.0, signer, &seed_obj.1).unwrap();
    (pdu.event_id.to_string(), serde_json::to_value(obj).unwrap())
}

async fn send_pdu(from: &TestNode, to: &TestNode, pdu: serde_json::Value) -> serde_json::Value {
    let body = json!({ "origin": from.server_name(), "origin_server_ts": 1, "pdus": [pdu] });
    let resp = from
        .node()
        .services()
        .federation()
        .unwrap()
        .request(
            &to.server_name(),
            reqwest::Method::PUT,
            "/_matrix/federation/v1/send/t1",
            Some(body),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    resp.body
}

async fn assert_not_in_timeline(user: &neurite_tests::User, room: &str, event_id: &str) {
    let page = user
        .get_ok(&format!(
            "/rooms/{}/messages?dir=b&limit=100",
            neurite_tests::enc(room)
        ))
        .await;
    let ids: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert!(
        !ids.contains(&event_id),
        "refused event {event_id} must not reach the timeline"
    );
    let (status, _) = user
        .get(&format!(
            "/rooms/{}/event/{}",
            neurite_tests::enc(room),
            neurite_tests::enc(event_id)
        ))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn events_with_bad_signatures_or_failing_auth_are_refused() {
    let (a, b) = neurite_tests::node_pair().await;
    let (alice, bob, room) = chat_room(&a, &b).await;
    let a_identity = a.node().services().identity.clone();

    // Signed by A, then altered: the signature no longer verifies.
    let (id, mut pdu) = pdu_on(&b, &room, &alice.user_id, &a_identity).await;
    pdu["origin_server_ts"] = json!(1_700_000_000_001u64);
    let resp = send_pdu(&a, &b, pdu).await;
    assert!(
        resp["pdus"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r["error"].is_string()),
        "{resp}"
    );
    assert_not_in_timeline(&bob, &room, &id).await;

    // Signed by a key that is not the one A's name encodes.
    let impostor = neurite_core::identity::Identity::from_seed(&[7u8; 32]).unwrap();
    let (id, pdu) = pdu_on(&b, &room, &alice.user_id, &impostor).await;
    let resp = send_pdu(&a, &b, pdu).await;
    assert!(
        resp["pdus"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r["error"].is_string()),
        "{resp}"
    );
    assert_not_in_timeline(&bob, &room, &id).await;

    // Properly signed by A, but from a user of A who never joined: fails the auth rules.
    let mallory = format!("@mallory:{}", a.server_name());
    let (id, pdu) = pdu_on(&b, &room, &mallory, &a_identity).await;
    let resp = send_pdu(&a, &b, pdu).await;
    assert!(resp["pdus"][&id]["error"].is_string(), "{resp}");
    assert_not_in_timeline(&bob, &room, &id).await;

    // The room still works, and its members are unchanged.
    let ok = alice.send_text(&room, "still here").await;
    bob.sync_until(None, |s| neurite_tests::has_event(s, &room, &ok))
        .await;
    let members = bob
        .get_ok(&format!(
            "/rooms/{}/joined_members",
            neurite_tests::enc(&room)
        ))
        .await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 2, "{members}");
}

#[tokio::test]
async fn typing_and_read_receipts_cross_servers() {
    let (a, b) = neurite_tests::node_pair().await;
    let (alice, bob, room) = chat_room(&a, &b).await;
    let enc_room = neurite_tests::enc(&room);
    alice
        .put_ok(
            &format!(
                "/rooms/{enc_room}/typing/{}",
                neurite_tests::enc(&alice.user_id)
            ),
            json!({ "typing": true, "timeout": 20000 }),
        )
        .await;
    let typing_seen = |s: &serde_json::Value| {
        s["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|evs| {
                evs.iter().any(|e| {
                    e["type"] == "m.typing"
                        && e["content"]["user_ids"]
                            .as_array()
                            .is_some_and(|u| u.iter().any(|x| x == alice.user_id.as_str()))
                })
            })
    };
    bob.sync_until(None, typing_seen).await;

    let msg = bob.send_text(&room, "read me").await;
    alice
        .sync_until(None, |s| neurite_tests::has_event(s, &room, &msg))
        .await;
    alice
        .post_ok(
            &format!(
                "/rooms/{enc_room}/receipt/m.read/{}",
                neurite_tests::enc(&msg)
            ),
            json!({}),
        )
        .await;
    bob.sync_until(None, |s| {
        s["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|evs| {
                evs.iter().any(|e| {
                    e["type"] == "m.receipt"
                        && e["content"][&msg]["m.read"][&alice.user_id].is_object()
                })
            })
    })
    .await;
}

#[tokio::test]
async fn presence_crosses_servers_that_share_a_room() {
    let (a, b) = neurite_tests::node_pair().await;
    let (alice, bob, _room) = chat_room(&a, &b).await;
    let path = format!("/presence/{}/status", neurite_tests::enc(&alice.user_id));
    alice
        .put_ok(
            &path,
            json!({ "presence": "unavailable", "status_msg": "on a train" }),
        )
        .await;
    let presence_of_alice = |s: &serde_json::Value| {
        s["presence"]["events"].as_array().and_then(|evs| {
            evs.iter()
                .find(|e| e["sender"] == alice.user_id.as_str())
                .cloned()
        })
    };
    let seen = bob
        .sync_until(None, |s| {
            presence_of_alice(s).is_some_and(|e| e["content"]["status_msg"] == "on a train")
        })
        .await;
    let event = presence_of_alice(&seen).unwrap();
    assert_eq!(event["type"], "m.presence", "{event}");
    assert_eq!(event["content"]["presence"], "unavailable", "{event}");

    // Bob can ask for it directly too, and a change is seen again.
    let direct = bob.get_ok(&path).await;
    assert_eq!(direct["presence"], "unavailable", "{direct}");
    assert_eq!(direct["status_msg"], "on a train", "{direct}");
    alice
        .put_ok(&path, json!({ "presence": "online", "status_msg": "home" }))
        .await;
    bob.sync_until(None, |s| {
        presence_of_alice(s).is_some_and(|e| {
            e["content"]["presence"] == "online" && e["content"]["status_msg"] == "home"
        })
    })
    .await;
}

#[tokio::test]
async fn presence_set_before_a_join_reaches_the_new_room_mates() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    for (user, msg) in [(&alice, "at work"), (&bob, "cycling")] {
        user.put_ok(
            &format!("/presence/{}/status", neurite_tests::enc(&user.user_id)),
            json!({ "presence": "unavailable", "status_msg": msg }),
        )
        .await;
    }
    let room = alice
        .create_room(json!({ "name": "Later", "preset": "private_chat" }))
        .await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    bob.join(&room).await;

    let has_status = |s: &serde_json::Value, who: &str, msg: &str| {
        s["presence"]["events"].as_array().is_some_and(|evs| {
            evs.iter()
                .any(|e| e["sender"] == who && e["content"]["status_msg"] == msg)
        })
    };
    // Each side hears the other's presence, though neither changed it after the join.
    bob.sync_until(None, |s| has_status(s, &alice.user_id, "at work"))
        .await;
    alice
        .sync_until(None, |s| has_status(s, &bob.user_id, "cycling"))
        .await;
}

#[tokio::test]
async fn declining_a_remote_invite_and_leaving_are_seen_by_both_servers() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice
        .create_room(json!({ "name": "Decline me", "preset": "private_chat" }))
        .await;
    alice.invite(&room, &bob.user_id).await;
    let s = bob
        .sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let since = s["next_batch"].as_str().unwrap().to_owned();
    bob.post_ok(
        &format!("/rooms/{}/leave", neurite_tests::enc(&room)),
        json!({}),
    )
    .await;
    // Bob's server shows the room as left; Alice's room records Bob's leave.
    bob.sync_until(Some(&since), |s| s["rooms"]["leave"][&room].is_object())
        .await;
    let enc_room = neurite_tests::enc(&room);
    let deadline = tokio::time::Instant::now() + neurite_tests::WAIT;
    loop {
        let (status, member) = alice
            .get(&format!(
                "/rooms/{enc_room}/state/m.room.member/{}",
                neurite_tests::enc(&bob.user_id)
            ))
            .await;
        if status == 200 && member["membership"] == "leave" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never saw bob decline: {member}"
        );
        alice.sync(None, 500).await;
    }

    // A member who joined and then leaves: the leave reaches the other server.
    let alice2 = a.register("alice2").await;
    let bob2 = b.register("bob2").await;
    let room2 = alice2
        .create_room(json!({ "preset": "private_chat" }))
        .await;
    alice2.invite(&room2, &bob2.user_id).await;
    bob2.sync_until(None, |s| s["rooms"]["invite"][&room2].is_object())
        .await;
    bob2.join(&room2).await;
    bob2.post_ok(
        &format!("/rooms/{}/leave", neurite_tests::enc(&room2)),
        json!({}),
    )
    .await;
    alice2
        .sync_until(None, |s| {
            s["rooms"]["join"][&room2]["summary"]["m.joined_member_count"] == 1
                && s["rooms"]["join"][&room2]["summary"]["m.invited_member_count"] == 0
        })
        .await;
}
