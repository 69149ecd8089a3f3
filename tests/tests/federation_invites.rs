//! Inviting users of other servers: from `createRoom` as from `/invite`, to a phone that is
//! on, one that is off (the invite waits in the inviter's database and is delivered when the
//! phones meet again, across restarts of either side), and to a server that refuses it. An
//! invite carries the invitee's profile as far as the inviting node knows it.

use neurite_tests::{TestNode, User, WAIT, enc, has_event};
use serde_json::{Value, json};

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The membership `user` has in `room`, as `viewer` sees the room's state.
async fn membership_of(viewer: &User, room: &str, user: &str) -> Value {
    viewer
        .get_ok(&format!(
            "/rooms/{}/state/m.room.member/{}",
            enc(room),
            enc(user)
        ))
        .await
}

/// Whether the federation invite for `user`'s membership event in `room` still waits in
/// `node`'s queue.
async fn invite_waits(node: &TestNode, room: &str, user: &str) -> bool {
    let (room, user) = (room.to_owned(), user.to_owned());
    node.node()
        .services()
        .db
        .read(move |c| {
            let event = neurite_core::storage::events::membership(c, &room, &user)?
                .map(|m| m.event_id)
                .unwrap_or_default();
            neurite_core::storage::federation::invite_queued(c, &event)
        })
        .await
        .expect("read the queue")
}

/// Bob joins `room` once invited, then messages flow both ways.
async fn join_and_chat(alice: &User, bob: &User, room: &str) {
    bob.join(room).await;
    let hello = alice.send_text(room, "hello bob").await;
    bob.sync_until(None, |s| has_event(s, room, &hello)).await;
    let reply = bob.send_text(room, "hello alice").await;
    alice.sync_until(None, |s| has_event(s, room, &reply)).await;
}

#[tokio::test]
async fn create_room_invites_an_online_user_of_another_server() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "trusted_private_chat",
            "is_direct": true,
            "name": "Just us",
            "invite": [bob.user_id],
        }))
        .await;
    assert_eq!(
        membership_of(&alice, &room, &bob.user_id).await["membership"],
        "invite"
    );

    let synced = bob
        .sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let stripped = synced["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("invite_state")
        .clone();
    assert!(
        stripped
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Just us"),
        "{stripped:?}"
    );
    assert!(
        stripped.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["is_direct"] == true),
        "the invite is marked direct: {stripped:?}"
    );

    // Sliding sync shows it too, as a direct invite.
    let body = json!({ "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 1 } } });
    let resp = bob.post_ok(&format!("{SLIDING}?timeout=0"), body).await;
    assert!(
        resp["rooms"][&room]["invite_state"].is_array(),
        "sliding sync lists the invite: {resp}"
    );
    assert_eq!(resp["rooms"][&room]["is_dm"], true, "{resp}");

    join_and_chat(&alice, &bob, &room).await;
}

#[tokio::test]
async fn invite_endpoint_reaches_a_user_of_another_server() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice.create_room(json!({ "name": "Later" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    assert!(!invite_waits(&a, &room, &bob.user_id).await);
    join_and_chat(&alice, &bob, &room).await;
}

#[tokio::test]
async fn an_invite_carries_the_profile_the_node_knows() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    // Unknown to Alice's node: the invite goes out without a profile (nothing is asked of B).
    let first = alice.create_room(json!({ "name": "First" })).await;
    alice.invite(&first, &bob.user_id).await;
    let member = membership_of(&alice, &first, &bob.user_id).await;
    assert!(member.get("displayname").is_none(), "{member}");

    bob.put_ok(
        &format!("/profile/{}/displayname", enc(&bob.user_id)),
        json!({ "displayname": "Bob of B" }),
    )
    .await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&first].is_object())
        .await;
    bob.join(&first).await;
    // Once Bob's join (with his name) is in a room Alice's node holds, her next invite of him
    // carries his name, so her room list can name the direct chat after him.
    let dm = alice
        .create_room(json!({
            "preset": "trusted_private_chat",
            "is_direct": true,
            "invite": [bob.user_id],
        }))
        .await;
    let member = membership_of(&alice, &dm, &bob.user_id).await;
    assert_eq!(member["membership"], "invite", "{member}");
    assert_eq!(member["displayname"], "Bob of B", "{member}");
    assert_eq!(member["is_direct"], true, "{member}");
}

#[tokio::test]
async fn invites_to_a_phone_that_is_off_arrive_when_it_returns() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob_id = b.register("bob").await.user_id;
    let a_addr = a.node().p2p_addrs()[0].parse().expect("a's address");
    let dir = b.stop().await;

    // Both ways of inviting answer at once and show Bob as invited.
    let dm = alice
        .create_room(json!({ "is_direct": true, "invite": [bob_id] }))
        .await;
    let group = alice.create_room(json!({ "name": "Group" })).await;
    alice.invite(&group, &bob_id).await;
    for room in [&dm, &group] {
        assert_eq!(
            membership_of(&alice, room, &bob_id).await["membership"],
            "invite"
        );
        assert!(
            invite_waits(&a, room, &bob_id).await,
            "the invite waits for Bob's server"
        );
    }

    // Bob's phone comes back (on a new port) and dials A; the invites arrive.
    let b = TestNode::start_in(dir, |c| c.static_peers = vec![a_addr]).await;
    let bob = b.login("bob", "correct horse").await;
    for room in [&dm, &group] {
        // A full sync each time: each invite shows whenever it came.
        bob.sync_until(None, |s| {
            s["rooms"]["invite"][room].is_object() || s["rooms"]["join"][room].is_object()
        })
        .await;
        assert!(
            bob.sync(None, 0).await["rooms"]["invite"][room].is_object(),
            "invited to {room}"
        );
        assert!(!invite_waits(&a, room, &bob_id).await, "delivered");
    }
    join_and_chat(&alice, &bob, &group).await;
}

#[tokio::test]
async fn a_queued_invite_survives_a_restart_of_the_inviter() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob_id = b.register("bob").await.user_id;
    let b_dir = b.stop().await;
    let room = alice
        .create_room(json!({ "name": "Patience", "invite": [bob_id] }))
        .await;
    assert!(invite_waits(&a, &room, &bob_id).await);

    // Both phones restart; only A knows where to find the other.
    let a_dir = a.stop().await;
    let b = TestNode::start_in(b_dir, |_| {}).await;
    let b_addr = b.node().p2p_addrs()[0].parse().expect("b's address");
    let a = TestNode::start_in(a_dir, |c| c.static_peers = vec![b_addr]).await;
    let bob = b.login("bob", "correct horse").await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let alice = a.login("alice", "correct horse").await;
    join_and_chat(&alice, &bob, &room).await;
}

#[tokio::test]
async fn a_refused_invite_is_withdrawn() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    // Bob's server has no such user, and says so.
    let nobody = format!("@nobody:{}", b.server_name());
    let room = alice.create_room(json!({ "name": "Nobody" })).await;
    alice.invite(&room, &nobody).await;

    let since = alice.sync(None, 0).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut since = Some(since);
    loop {
        let member = membership_of(&alice, &room, &nobody).await;
        if member["membership"] == "leave" {
            let reason = member["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("refused"), "{member}");
            break;
        }
        assert_eq!(member["membership"], "invite", "{member}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused invite was never withdrawn"
        );
        // Wait for the room to change rather than polling blindly.
        let s = alice.sync(since.as_deref(), 1000).await;
        since = s["next_batch"].as_str().map(str::to_owned);
    }
    assert!(!invite_waits(&a, &room, &nobody).await);
}
