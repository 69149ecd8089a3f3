//! End-to-end encryption across two nodes: a user's keys queried and claimed from the other
//! server, device-list changes reaching the other side's sync, and to-device messages across
//! servers (delivered once, kept across a restart of the receiver).

use std::time::Duration;

use neurite_core::storage::federation as fed_store;
use neurite_tests::{
    TestNode, TestSigningKey, User, WAIT, device_list_has, login_on_device, next_batch,
    signed_device_keys, signed_one_time_keys, to_device_events,
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";

/// Uploads fresh signed device keys and `otks` one-time keys for `user`; returns the key.
async fn upload_device(user: &User, otks: usize) -> TestSigningKey {
    let key = TestSigningKey::generate();
    let body = json!({
        "device_keys": signed_device_keys(user, &key),
        "one_time_keys": signed_one_time_keys(user, &key, "k", otks),
    });
    user.upload_keys(body).await;
    key
}

async fn query(user: &User, target: &str) -> Value {
    user.post_ok("/keys/query", json!({ "device_keys": { target: [] } }))
        .await
}

/// Alice on `a` and Bob on `b` in one room (Bob invited and joined), both seeing the join.
async fn shared_room(alice: &User, bob: &User) -> String {
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    bob.join(&room).await;
    let bob_joined = |events: &Value| {
        events.as_array().is_some_and(|a| {
            a.iter().any(|e| {
                e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "join"
            })
        })
    };
    alice
        .sync_until(None, |s| {
            let joined = &s["rooms"]["join"][&room];
            bob_joined(&joined["timeline"]["events"])
                || bob_joined(&joined["state"]["events"])
                || joined["summary"]["m.joined_member_count"] == 2
        })
        .await;
    room
}

/// Waits until `node` has nothing queued for other servers.
async fn outbox_drained(node: &TestNode) {
    let db = node.node().services().db.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending = db
            .read(fed_store::pending_destinations)
            .await
            .expect("read outbox");
        if pending.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox still holds {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn keys_of_a_remote_user_are_queried_and_claimed_through_their_server() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let bob_key = upload_device(&bob, 2).await;

    // Before sharing a room: asked of Bob's server each time.
    let q = query(&alice, &bob.user_id).await;
    let device = &q["device_keys"][&bob.user_id][&bob.device_id];
    assert_eq!(
        device["keys"][format!("ed25519:{}", bob.device_id)],
        json!(bob_key.public()),
        "{q}"
    );
    assert_eq!(q["failures"], json!({}), "{q}");

    // Sharing a room: fetched once with /user/devices and cached.
    shared_room(&alice, &bob).await;
    let q = query(&alice, &bob.user_id).await;
    assert!(
        q["device_keys"][&bob.user_id][&bob.device_id].is_object(),
        "{q}"
    );

    let claim = |user: &User| {
        let body =
            json!({ "one_time_keys": { &bob.user_id: { &bob.device_id: "signed_curve25519" } } });
        let user = user.clone();
        async move { user.post_ok("/keys/claim", body).await }
    };
    let first = claim(&alice).await;
    let second = claim(&alice).await;
    let key_of = |c: &Value| {
        c["one_time_keys"][&bob.user_id][&bob.device_id]
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_else(|| panic!("a claimed key: {c}"))
    };
    assert_ne!(
        key_of(&first),
        key_of(&second),
        "each claim takes a new key"
    );
    assert_eq!(first["failures"], json!({}));
    let counts = bob.upload_keys(json!({})).await;
    assert_eq!(counts["signed_curve25519"], 0, "both keys were taken");
}

#[tokio::test]
async fn an_unreachable_server_is_reported_in_failures() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    upload_device(&bob, 1).await;
    b.stop().await;

    let q = query(&alice, &bob.user_id).await;
    let server = bob.user_id.split_once(':').unwrap().1;
    assert!(q["failures"][server].is_object(), "{q}");
    let c = alice
        .post_ok(
            "/keys/claim",
            json!({ "one_time_keys": { &bob.user_id: { &bob.device_id: "signed_curve25519" } } }),
        )
        .await;
    assert!(c["failures"][server].is_object(), "{c}");
}

#[tokio::test]
async fn remote_device_changes_reach_local_syncs_and_queries() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    upload_device(&bob, 0).await;
    let since = next_batch(&alice.sync(None, 0).await);

    // Bob joining a room with Alice puts him in her device-list changes.
    let room = shared_room(&alice, &bob).await;
    let s = alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let since = next_batch(&s);
    assert_eq!(
        query(&alice, &bob.user_id).await["device_keys"][&bob.user_id]
            .as_object()
            .map(|m| m.len()),
        Some(1)
    );

    // A second device of Bob's, with keys: announced to Alice's server.
    let phone = login_on_device(&b, "bob", PASSWORD, "PHONE").await;
    let phone_key = upload_device(&phone, 0).await;
    let s = alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let since = next_batch(&s);
    let q = query(&alice, &bob.user_id).await;
    assert_eq!(
        q["device_keys"][&bob.user_id]["PHONE"]["keys"]["ed25519:PHONE"],
        json!(phone_key.public()),
        "{q}"
    );

    // The device is deleted: gone from Alice's view too.
    phone.post_ok("/logout", json!({})).await;
    let s = alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let since = next_batch(&s);
    let q = query(&alice, &bob.user_id).await;
    let devices = q["device_keys"][&bob.user_id].as_object().unwrap();
    assert!(!devices.contains_key("PHONE"), "{q}");
    assert!(devices.contains_key(&bob.device_id), "{q}");

    // Bob leaves the only shared room: Alice's sync lists him in `left`.
    bob.leave(&room).await;
    alice
        .sync_until(Some(&since), |s| device_list_has(s, "left", &bob.user_id))
        .await;

    // A device added while no room is shared is not announced to Alice's server; once Bob
    // is back, her server does not trust what it had cached.
    let tablet = login_on_device(&b, "bob", PASSWORD, "TABLET").await;
    upload_device(&tablet, 0).await;
    shared_room(&alice, &bob).await;
    let q = query(&alice, &bob.user_id).await;
    assert!(q["device_keys"][&bob.user_id]["TABLET"].is_object(), "{q}");
}

/// A cross-signing key object of `usage` for `user`, signed by `signer` if given.
fn cross_key(
    user: &User,
    usage: &str,
    key: &TestSigningKey,
    signer: Option<&TestSigningKey>,
) -> Value {
    let mut obj = json!({
        "user_id": user.user_id,
        "usage": [usage],
        "keys": { format!("ed25519:{}", key.public()): key.public() },
    });
    if let Some(signer) = signer {
        signer.add_signature(
            &mut obj,
            &user.user_id,
            &format!("ed25519:{}", signer.public()),
        );
    }
    obj
}

#[tokio::test]
async fn cross_signing_keys_and_signatures_reach_the_other_server() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    upload_device(&bob, 0).await;
    shared_room(&alice, &bob).await;
    let q = query(&alice, &bob.user_id).await; // cached now, without cross-signing keys
    assert!(q["master_keys"].get(&bob.user_id).is_none(), "{q}");
    let since = next_batch(&alice.sync(None, 0).await);

    let (master, ssk) = (TestSigningKey::generate(), TestSigningKey::generate());
    bob.post_ok(
        "/keys/device_signing/upload",
        json!({
            "master_key": cross_key(&bob, "master", &master, None),
            "self_signing_key": cross_key(&bob, "self_signing", &ssk, Some(&master)),
        }),
    )
    .await;
    alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let q = query(&alice, &bob.user_id).await;
    assert_eq!(
        q["master_keys"][&bob.user_id]["keys"],
        json!({ format!("ed25519:{}", master.public()): master.public() }),
        "{q}"
    );
    assert!(q["self_signing_keys"][&bob.user_id].is_object(), "{q}");

    // Alice verifies Bob: her user-signing key signs his master key. Her server keeps the
    // signature and shows it to her alone.
    let (alice_master, alice_usk) = (TestSigningKey::generate(), TestSigningKey::generate());
    alice
        .post_ok(
            "/keys/device_signing/upload",
            json!({
                "master_key": cross_key(&alice, "master", &alice_master, None),
                "user_signing_key": cross_key(&alice, "user_signing", &alice_usk, Some(&alice_master)),
            }),
        )
        .await;
    let mut bob_master = q["master_keys"][&bob.user_id].clone();
    let usk_id = format!("ed25519:{}", alice_usk.public());
    alice_usk.add_signature(&mut bob_master, &alice.user_id, &usk_id);
    let r = alice
        .post_ok(
            "/keys/signatures/upload",
            json!({ &bob.user_id: { master.public(): bob_master } }),
        )
        .await;
    assert_eq!(r["failures"], json!({}), "{r}");
    let q = query(&alice, &bob.user_id).await;
    assert_eq!(
        q["master_keys"][&bob.user_id]["signatures"][&alice.user_id][&usk_id],
        bob_master["signatures"][&alice.user_id][&usk_id],
        "{q}"
    );
    // A forged one is refused.
    let mut forged = q["master_keys"][&bob.user_id].clone();
    TestSigningKey::generate().add_signature(&mut forged, &alice.user_id, &usk_id);
    let r = alice
        .post_ok(
            "/keys/signatures/upload",
            json!({ &bob.user_id: { master.public(): forged } }),
        )
        .await;
    assert_eq!(
        r["failures"][&bob.user_id][master.public()]["errcode"],
        "M_INVALID_SIGNATURE",
        "{r}"
    );

    // Bob signs his device with his self-signing key: Alice's server hears of it.
    let since = next_batch(&alice.sync(None, 0).await);
    let own = query(&bob, &bob.user_id).await;
    let mut signed = own["device_keys"][&bob.user_id][&bob.device_id].clone();
    signed.as_object_mut().unwrap().remove("unsigned");
    let ssk_id = format!("ed25519:{}", ssk.public());
    let sig = ssk.sign_json(&signed);
    signed["signatures"] = json!({ &bob.user_id: { &ssk_id: sig } });
    let r = bob
        .post_ok(
            "/keys/signatures/upload",
            json!({ &bob.user_id: { &bob.device_id: signed } }),
        )
        .await;
    assert_eq!(r["failures"], json!({}), "{r}");
    alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let q = query(&alice, &bob.user_id).await;
    assert_eq!(
        q["device_keys"][&bob.user_id][&bob.device_id]["signatures"][&bob.user_id][&ssk_id],
        json!(sig),
        "{q}"
    );
}

#[tokio::test]
async fn an_update_after_a_gap_makes_the_server_fetch_the_whole_list() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    upload_device(&bob, 0).await;
    shared_room(&alice, &bob).await;
    query(&alice, &bob.user_id).await; // cached now

    // An update whose prev_id Alice's server never saw: the cache cannot be patched.
    let phone = login_on_device(&b, "bob", PASSWORD, "PHONE").await;
    let phone_key = upload_device(&phone, 0).await;
    let since = next_batch(&alice.sync(None, 0).await);
    let edu = json!({
        "user_id": bob.user_id,
        "device_id": "GHOST",
        "stream_id": 1000,
        "prev_id": [999],
        "keys": { "user_id": bob.user_id, "device_id": "GHOST", "keys": {} },
    });
    let gap = a
        .node()
        .services()
        .e2ee
        .receive_device_list_update(&b.server_name(), &edu)
        .await
        .unwrap();
    assert_eq!(
        gap.as_deref(),
        Some(bob.user_id.as_str()),
        "a gap was noticed"
    );
    alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let q = query(&alice, &bob.user_id).await;
    let devices = q["device_keys"][&bob.user_id].as_object().unwrap();
    assert!(
        !devices.contains_key("GHOST"),
        "refetched, not patched: {q}"
    );
    assert_eq!(
        devices["PHONE"]["keys"]["ed25519:PHONE"],
        json!(phone_key.public()),
        "{q}"
    );
}

#[tokio::test]
async fn to_device_messages_cross_servers_once_and_survive_a_restart() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    in_a_room_together(&alice, &bob).await;
    let since = next_batch(&bob.sync(None, 0).await);

    alice
        .send_to_device(
            "m.test",
            json!({ &bob.user_id: { &bob.device_id: { "n": 1 } } }),
        )
        .await;
    alice
        .send_to_device("m.test", json!({ &bob.user_id: { "*": { "n": 2 } } }))
        .await;
    outbox_drained(&a).await;

    // Bob's server restarts before he syncs: the messages were stored when they arrived.
    let dir = b.stop().await;
    let b = TestNode::start_in(dir, |_| {}).await;
    let bob = login_on_device(&b, "bob", PASSWORD, &bob.device_id).await;
    let s = bob.sync(Some(&since), 0).await;
    let events = to_device_events(&s);
    let contents: Vec<&Value> = events.iter().map(|e| &e["content"]).collect();
    assert_eq!(contents, [&json!({ "n": 1 }), &json!({ "n": 2 })], "{s}");
    assert!(
        events
            .iter()
            .all(|e| e["sender"] == alice.user_id.as_str() && e["type"] == "m.test")
    );

    // A repeated EDU (a retried transaction) is not delivered again.
    let since = next_batch(&s);
    let edu = json!({
        "sender": alice.user_id,
        "type": "m.test",
        "message_id": "m1",
        "messages": { &bob.user_id: { &bob.device_id: { "n": 3 } } },
    });
    let e2ee = &b.node().services().e2ee;
    e2ee.receive_to_device(&a.server_name(), &edu)
        .await
        .unwrap();
    e2ee.receive_to_device(&a.server_name(), &edu)
        .await
        .unwrap();
    // Nor is a message whose sender is not of the sending server.
    let forged = json!({
        "sender": bob.user_id,
        "type": "m.test",
        "message_id": "m2",
        "messages": { &bob.user_id: { &bob.device_id: { "n": 4 } } },
    });
    e2ee.receive_to_device(&a.server_name(), &forged)
        .await
        .unwrap();
    let s = bob.sync(Some(&since), 0).await;
    let contents: Vec<Value> = to_device_events(&s)
        .into_iter()
        .map(|e| e["content"].clone())
        .collect();
    assert_eq!(contents, [json!({ "n": 3 })], "{s}");
    let s = bob.sync(Some(&next_batch(&s)), 0).await;
    assert!(to_device_events(&s).is_empty(), "{s}");
}

/// matrix-nio, with its own encryption, chatting across the two nodes: A on one, B on the
/// other; each side decrypts the other's messages. Needs NEURITE_PYTHON (set by
/// tests/run.sh) pointing at a Python with matrix-nio[e2e].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_chats_end_to_end_encrypted_across_two_nodes() {
    let python = std::env::var("NEURITE_PYTHON").expect(
        "NEURITE_PYTHON is not set: run the tests with tests/run.sh, which installs matrix-nio and sets it",
    );
    let (a, b) = neurite_tests::node_pair().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/nio/e2ee_chat.py");
    // The script bounds itself (it aborts after its budget); this wait is a second bound.
    let mut command = std::process::Command::new(python);
    command.arg(script).arg(&a.url).arg(&b.url);
    let child = tokio::task::spawn_blocking(move || command.output());
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the nio script finished within 120 s")
        .expect("the script's thread")
        .expect("the nio script ran");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "nio e2ee chat across nodes failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    println!("{stdout}");
}

#[tokio::test]
async fn to_device_messages_wait_for_a_server_that_is_away() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    in_a_room_together(&alice, &bob).await;
    let since = next_batch(&bob.sync(None, 0).await);
    let a_addr = a.node().p2p_addrs()[0].parse().expect("a's address");
    let dir = b.stop().await;

    alice
        .send_to_device(
            "m.room_key_request",
            json!({ &bob.user_id: { &bob.device_id: { "while": "away" } } }),
        )
        .await;

    // B comes back (on a new port) and dials A; the queued EDU goes out.
    let b = TestNode::start_in(dir, |c| c.static_peers = vec![a_addr]).await;
    let bob = login_on_device(&b, "bob", PASSWORD, &bob.device_id).await;
    let s = bob
        .sync_until(Some(&since), |s| !to_device_events(s).is_empty())
        .await;
    let events = to_device_events(&s);
    assert_eq!(events.len(), 1, "{s}");
    assert_eq!(events[0]["content"], json!({ "while": "away" }));
    assert_eq!(events[0]["type"], "m.room_key_request");
}

/// Alice invites Bob (of another server) to a room of hers and he joins: to-device messages
/// go between users who share a room.
async fn in_a_room_together(alice: &User, bob: &User) {
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| s["rooms"]["invite"].get(&room).is_some())
        .await;
    bob.join(&room).await;
}
