//! End-to-end encryption support: keys, to-device messages, device lists, key backup.
//!
//! Ports these Complement client-server scenarios (matrix-org/complement, tests/csapi):
//! - `TestToDeviceMessages` (to_device_test.go)
//! - `TestUploadKey`, `TestKeyClaimOrdering`, `TestUploadKeyIdempotency`,
//!   `TestUploadKeyIdempotencyOverlap` (upload_keys_test.go)
//! - `TestKeyChangesLocal` (keychanges_test.go)
//!
//! plus bad input (forged self-signatures, keys of another user, claims with nothing left),
//! fallback keys, cross-signing, to-device idempotency and durability across a restart,
//! long-poll wake-ups, and server-side key backup.

use std::time::{Duration, Instant};

use neurite_tests::{
    TestNode, TestSigningKey, User, assert_error, assert_status, device_list_has, enc,
    login_on_device, next_batch, signed_device_keys, signed_one_time_keys, to_device_events,
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";

/// Uploads fresh signed device keys (and `otks` one-time keys) for `user`; returns the key.
async fn upload_device(user: &User, otks: usize) -> TestSigningKey {
    let key = TestSigningKey::generate();
    let body = json!({
        "device_keys": signed_device_keys(user, &key),
        "one_time_keys": signed_one_time_keys(user, &key, "k", otks),
    });
    user.upload_keys(body).await;
    key
}

/// `POST /keys/query` for all devices of `target`, as `user`.
async fn query(user: &User, target: &str) -> Value {
    user.post_ok("/keys/query", json!({ "device_keys": { target: [] } }))
        .await
}

/// `POST /keys/claim` of one `signed_curve25519` key of `target`'s device.
async fn claim(user: &User, target: &User) -> Value {
    user.post_ok(
        "/keys/claim",
        json!({ "one_time_keys": { &target.user_id: { &target.device_id: "signed_curve25519" } } }),
    )
    .await
}

/// Alice and bob on one node, both joined to one room.
async fn two_in_a_room(node: &TestNode) -> (User, User, String) {
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    (alice, bob, room)
}

// ------------------------------------------------------------------ TestToDeviceMessages

#[tokio::test]
async fn to_device_message_reaches_two_users_through_sync() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let charlie = node.register("charlie").await;
    let bob_since = next_batch(&bob.sync(None, 0).await);
    let charlie_since = next_batch(&charlie.sync(None, 0).await);

    let content = json!({ "my_key": "my_value" });
    alice
        .send_to_device(
            "my.test.type",
            json!({
                &bob.user_id: { &bob.device_id: content },
                &charlie.user_id: { &charlie.device_id: content },
            }),
        )
        .await;

    let is_it = |e: &Value| {
        e["type"] == "my.test.type" && e["content"] == content && e["sender"] == alice.user_id
    };
    for (user, since) in [(&bob, &bob_since), (&charlie, &charlie_since)] {
        user.sync_until(Some(since), |s| to_device_events(s).iter().any(is_it))
            .await;
    }
}

#[tokio::test]
async fn to_device_star_reaches_every_device_and_retries_are_idempotent() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob1 = node.register("bob").await;
    let bob2 = login_on_device(&node, "bob", PASSWORD, "BOBTWO").await;

    for _ in 0..2 {
        alice
            .put_ok(
                "/sendToDevice/m.test/same-txn",
                json!({ "messages": { &bob1.user_id: { "*": { "n": 1 } } } }),
            )
            .await;
    }
    // A message to a device that does not exist is dropped, not an error.
    alice
        .send_to_device(
            "m.test",
            json!({ &bob1.user_id: { "NOSUCHDEVICE": { "n": 2 } } }),
        )
        .await;
    for bob in [&bob1, &bob2] {
        let s = bob.sync(None, 0).await;
        let events = to_device_events(&s);
        assert_eq!(events.len(), 1, "exactly one message per device: {s}");
        assert_eq!(events[0]["content"], json!({ "n": 1 }));
    }
}

#[tokio::test]
async fn to_device_messages_are_deleted_once_acknowledged() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let start = next_batch(&bob.sync(None, 0).await);
    alice
        .send_to_device(
            "m.test",
            json!({ &bob.user_id: { &bob.device_id: { "n": 1 } } }),
        )
        .await;

    let first = bob.sync(Some(&start), 0).await;
    assert_eq!(to_device_events(&first).len(), 1, "{first}");
    // Retrying the same request (the response was lost) delivers the message again.
    let retry = bob.sync(Some(&start), 0).await;
    assert_eq!(to_device_events(&retry).len(), 1, "{retry}");
    // A sync past it acknowledges it: it is gone for good, even for the old token.
    let after = bob.sync(Some(&next_batch(&retry)), 0).await;
    assert!(to_device_events(&after).is_empty(), "{after}");
    let old = bob.sync(Some(&start), 0).await;
    assert!(
        to_device_events(&old).is_empty(),
        "deleted after acknowledgement: {old}"
    );
}

#[tokio::test]
async fn to_device_messages_survive_a_restart() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let since = next_batch(&bob.sync(None, 0).await);
    alice
        .send_to_device(
            "m.test",
            json!({ &bob.user_id: { &bob.device_id: { "kept": true } } }),
        )
        .await;

    let dir = node.stop().await;
    let node = TestNode::start_in(dir, |_| {}).await;
    // Log in again on the same device: its inbox is kept.
    let bob = login_on_device(&node, "bob", PASSWORD, &bob.device_id).await;
    let s = bob.sync(Some(&since), 0).await;
    let events = to_device_events(&s);
    assert_eq!(events.len(), 1, "{s}");
    assert_eq!(events[0]["content"], json!({ "kept": true }));
    assert_eq!(events[0]["sender"], alice.user_id);
}

#[tokio::test]
async fn long_polling_sync_wakes_for_a_to_device_message() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let since = next_batch(&bob.sync(None, 0).await);
    let listening = node.listeners();
    let waiter = {
        let bob = bob.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let s = bob.sync(Some(&since), 15_000).await;
            (started.elapsed(), s)
        })
    };
    node.until_listening(listening).await;
    alice
        .send_to_device("m.wake", json!({ &bob.user_id: { &bob.device_id: {} } }))
        .await;
    let (elapsed, s) = waiter.await.expect("sync task");
    assert!(
        elapsed < Duration::from_secs(10),
        "sync did not wake: {elapsed:?}"
    );
    assert_eq!(to_device_events(&s).len(), 1, "{s}");
}

#[tokio::test]
async fn more_to_device_messages_than_one_sync_carries_arrive_over_several() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let mut since = next_batch(&bob.sync(None, 0).await);
    for i in 0..130 {
        alice
            .send_to_device(
                "m.count",
                json!({ &bob.user_id: { &bob.device_id: { "i": i } } }),
            )
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let s = bob.sync(Some(&since), 0).await;
        seen.extend(
            to_device_events(&s)
                .iter()
                .map(|e| e["content"]["i"].as_i64().unwrap_or(-1)),
        );
        since = next_batch(&s);
    }
    assert_eq!(
        seen,
        (0..130).collect::<Vec<i64>>(),
        "in order, none lost, none repeated"
    );
}

#[tokio::test]
async fn send_to_device_rejects_bad_input() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    assert_error(
        &alice
            .put(
                "/sendToDevice/m.test/t1",
                json!({ "messages": { "not a user": { "D": {} } } }),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice
            .put(
                "/sendToDevice/m.test/t2",
                json!({ "messages": { &alice.user_id: { "D": 5 } } }),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.put("/sendToDevice/m.test/t3", json!({})).await,
        400,
        "M_BAD_JSON",
    );
}

// ------------------------------------------------------------------------ TestUploadKey

#[tokio::test]
async fn upload_query_and_claim_keys() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let key = TestSigningKey::generate();
    let device_keys = signed_device_keys(&alice, &key);
    let otks = signed_one_time_keys(&alice, &key, "", 1);

    // Can upload device keys.
    let counts = alice
        .upload_keys(json!({ "device_keys": device_keys, "one_time_keys": otks }))
        .await;
    assert_eq!(counts["signed_curve25519"], 1, "{counts}");

    // Can query device keys using POST.
    let all = query(&alice, &alice.user_id).await;
    assert!(
        all["device_keys"][&alice.user_id][&alice.device_id].is_object(),
        "{all}"
    );

    // Can query specific device keys using POST.
    let one = alice
        .post_ok(
            "/keys/query",
            json!({ "device_keys": { &alice.user_id: [&alice.device_id] } }),
        )
        .await;
    let got = &one["device_keys"][&alice.user_id][&alice.device_id];
    for field in ["algorithms", "device_id", "keys", "signatures", "user_id"] {
        assert_eq!(got[field], device_keys[field], "{field}: {one}");
    }

    // Query for a user with no keys returns an empty key dict.
    let none = query(&alice, &bob.user_id).await;
    assert_eq!(none["device_keys"][&bob.user_id], json!({}), "{none}");

    // Can claim one time key using POST; then there is none left.
    let claimed = claim(&alice, &alice).await;
    assert_eq!(
        claimed["one_time_keys"][&alice.user_id][&alice.device_id], otks,
        "{claimed}"
    );
    let again = claim(&alice, &alice).await;
    assert!(
        again["one_time_keys"].get(&alice.user_id).is_none(),
        "no key left to claim: {again}"
    );
    let counts = alice.upload_keys(json!({})).await;
    assert_eq!(counts["signed_curve25519"], 0, "{counts}");
}

#[tokio::test]
async fn upload_rejects_invalid_device_keys() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    // Missing algorithms, keys and signatures.
    assert_error(
        &bob.post(
            "/keys/upload",
            json!({ "device_keys": { "user_id": bob.user_id, "device_id": bob.device_id } }),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    // Keys claiming to belong to a different user (properly signed by bob's key).
    let key = TestSigningKey::generate();
    let mut forged = signed_device_keys(&bob, &key);
    forged["user_id"] = json!(alice.user_id);
    forged.as_object_mut().expect("object").remove("signatures");
    key.add_signature(
        &mut forged,
        &alice.user_id,
        &format!("ed25519:{}", bob.device_id),
    );
    assert_error(
        &bob.post("/keys/upload", json!({ "device_keys": forged }))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // Keys of another device of the same user.
    let mut other_device = signed_device_keys(&bob, &key);
    other_device["device_id"] = json!("SOMEOTHER");
    assert_error(
        &bob.post("/keys/upload", json!({ "device_keys": other_device }))
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn upload_rejects_a_forged_self_signature() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let device_key = TestSigningKey::generate();
    let attacker = TestSigningKey::generate();

    // Signed by a key other than the device's own ed25519 key.
    let mut keys = signed_device_keys(&alice, &device_key);
    keys.as_object_mut().expect("object").remove("signatures");
    attacker.add_signature(
        &mut keys,
        &alice.user_id,
        &format!("ed25519:{}", alice.device_id),
    );
    assert_error(
        &alice
            .post("/keys/upload", json!({ "device_keys": keys }))
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // Changed after signing.
    let mut tampered = signed_device_keys(&alice, &device_key);
    tampered["algorithms"] = json!(["m.olm.v1.curve25519-aes-sha2"]);
    assert_error(
        &alice
            .post("/keys/upload", json!({ "device_keys": tampered }))
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // Without any signature.
    let mut unsigned = signed_device_keys(&alice, &device_key);
    unsigned["signatures"] = json!({});
    assert_error(
        &alice
            .post("/keys/upload", json!({ "device_keys": unsigned }))
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // Nothing was stored.
    let q = query(&alice, &alice.user_id).await;
    assert_eq!(q["device_keys"][&alice.user_id], json!({}), "{q}");
}

#[tokio::test]
async fn one_time_keys_are_claimed_in_upload_order() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let key = TestSigningKey::generate();
    let otks = signed_one_time_keys(&alice, &key, "", 2);
    let otk1 = json!({ "signed_curve25519:1": otks["signed_curve25519:1"] });
    let otk0 = json!({ "signed_curve25519:0": otks["signed_curve25519:0"] });
    alice
        .upload_keys(
            json!({ "device_keys": signed_device_keys(&alice, &key), "one_time_keys": otk1 }),
        )
        .await;
    alice.upload_keys(json!({ "one_time_keys": otk0 })).await;
    let path = |c: &Value| c["one_time_keys"][&alice.user_id][&alice.device_id].clone();
    assert_eq!(path(&claim(&alice, &alice).await), otk1);
    assert_eq!(path(&claim(&alice, &alice).await), otk0);
}

#[tokio::test]
async fn one_time_key_upload_is_idempotent_and_counts_overlaps_once() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let key = TestSigningKey::generate();
    let otks = signed_one_time_keys(&alice, &key, "", 4);
    let all: Vec<(String, Value)> = otks
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let abc: serde_json::Map<String, Value> = all[..3].iter().cloned().collect();
    let bcd: serde_json::Map<String, Value> = all[1..].iter().cloned().collect();

    let counts = alice
        .upload_keys(
            json!({ "device_keys": signed_device_keys(&alice, &key), "one_time_keys": otks }),
        )
        .await;
    assert_eq!(counts["signed_curve25519"], 4);
    assert_eq!(
        alice.upload_keys(json!({ "one_time_keys": otks })).await["signed_curve25519"],
        4
    );

    let bob = node.register("bob").await;
    let bob_key = TestSigningKey::generate();
    bob.upload_keys(json!({ "device_keys": signed_device_keys(&bob, &bob_key) }))
        .await;
    assert_eq!(
        bob.upload_keys(json!({ "one_time_keys": abc })).await["signed_curve25519"],
        3
    );
    assert_eq!(
        bob.upload_keys(json!({ "one_time_keys": bcd })).await["signed_curve25519"],
        4
    );

    // The same key id with different content is refused.
    let mut changed = otks.clone();
    changed[&all[0].0]["key"] = json!("AAAA");
    assert_error(
        &alice
            .post("/keys/upload", json!({ "one_time_keys": changed }))
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn fallback_key_is_claimed_when_one_time_keys_run_out() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let key = TestSigningKey::generate();
    let mut fallback =
        json!({ "key": "ZmFsbGJhY2sga2V5IGJ5dGVzIGZvciB0ZXN0cyBvbmx5", "fallback": true });
    key.add_signature(
        &mut fallback,
        &alice.user_id,
        &format!("ed25519:{}", alice.device_id),
    );
    alice
        .upload_keys(json!({
            "device_keys": signed_device_keys(&alice, &key),
            "one_time_keys": signed_one_time_keys(&alice, &key, "", 1),
            "fallback_keys": { "signed_curve25519:fb": fallback },
        }))
        .await;
    let s = alice.sync(None, 0).await;
    assert_eq!(
        s["device_unused_fallback_key_types"],
        json!(["signed_curve25519"]),
        "{s}"
    );
    assert_eq!(
        s["device_one_time_keys_count"]["signed_curve25519"], 1,
        "{s}"
    );

    let path = |c: &Value| c["one_time_keys"][&alice.user_id][&alice.device_id].clone();
    assert!(path(&claim(&alice, &alice).await)["signed_curve25519:0"].is_object());
    // One-time keys exhausted: the fallback key, again and again.
    for _ in 0..2 {
        assert_eq!(
            path(&claim(&alice, &alice).await),
            json!({ "signed_curve25519:fb": fallback })
        );
    }
    let s = alice.sync(None, 0).await;
    assert_eq!(
        s["device_unused_fallback_key_types"],
        json!([]),
        "marked used: {s}"
    );
    // Re-uploading the same fallback key keeps it used; a new one is unused.
    alice
        .upload_keys(json!({ "fallback_keys": { "signed_curve25519:fb": fallback } }))
        .await;
    assert_eq!(
        alice.sync(None, 0).await["device_unused_fallback_key_types"],
        json!([])
    );
    alice
        .upload_keys(json!({ "fallback_keys": { "signed_curve25519:fb2": { "key": "bmV3", "fallback": true } } }))
        .await;
    assert_eq!(
        alice.sync(None, 0).await["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
}

#[tokio::test]
async fn keys_of_users_sharing_no_room_are_not_disclosed() {
    let node = TestNode::start().await;
    let (alice, bob, _room) = two_in_a_room(&node).await;
    let charlie = node.register("charlie").await;
    upload_device(&alice, 2).await;

    let by_bob = query(&bob, &alice.user_id).await;
    assert!(
        by_bob["device_keys"][&alice.user_id][&alice.device_id].is_object(),
        "{by_bob}"
    );
    let by_charlie = query(&charlie, &alice.user_id).await;
    assert_eq!(
        by_charlie["device_keys"][&alice.user_id],
        json!({}),
        "{by_charlie}"
    );
    let claimed = claim(&charlie, &alice).await;
    assert_eq!(claimed["one_time_keys"], json!({}), "{claimed}");
    // Bob may claim; the key is gone after.
    assert!(claim(&bob, &alice).await["one_time_keys"][&alice.user_id].is_object());
    assert_eq!(alice.upload_keys(json!({})).await["signed_curve25519"], 1);
}

// -------------------------------------------------------------------- TestKeyChangesLocal

#[tokio::test]
async fn new_login_with_keys_creates_a_device_lists_changed_entry() {
    let node = TestNode::start().await;
    let (alice, bob, room) = two_in_a_room(&node).await;
    upload_device(&bob, 1).await;
    let joined = |s: &Value| {
        s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_some_and(|evs| {
                evs.iter().any(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == bob.user_id
                        && e["content"]["membership"] == "join"
                })
            })
    };
    let next_batch1 = next_batch(&alice.sync_until(None, joined).await);

    let bob2 = node.login("bob", PASSWORD).await;
    upload_device(&bob2, 1).await;

    let s = alice
        .sync_until(Some(&next_batch1), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let next = next_batch(&s);
    let changes = alice
        .get_ok(&format!(
            "/keys/changes?from={}&to={}",
            enc(&next_batch1),
            enc(&next)
        ))
        .await;
    assert_eq!(changes["changed"], json!([bob.user_id]), "{changes}");
    let keys = query(&alice, &bob.user_id).await;
    assert_eq!(
        keys["device_keys"][&bob.user_id]
            .as_object()
            .map(|m| m.len()),
        Some(2),
        "{keys}"
    );
}

#[tokio::test]
async fn device_lists_report_new_room_members_and_users_who_left() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let since = next_batch(&alice.sync(None, 0).await);

    bob.join(&room).await;
    let s = alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let since = next_batch(&s);

    bob.leave(&room).await;
    let s = alice
        .sync_until(Some(&since), |s| device_list_has(s, "left", &bob.user_id))
        .await;
    assert!(!device_list_has(&s, "changed", &bob.user_id), "{s}");

    // Nothing new: an incremental sync carries no device-list entries.
    let quiet = alice.sync(Some(&next_batch(&s)), 0).await;
    assert_eq!(quiet["device_lists"], json!({ "changed": [], "left": [] }));
    assert_error(
        &alice.get("/keys/changes?from=nonsense&to=s1").await,
        400,
        "M_INVALID_PARAM",
    );
}

// ------------------------------------------------------------------------- cross-signing

/// A cross-signing key object for `user` with `usage`, signed by `signer` if given.
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
async fn cross_signing_keys_and_signatures() {
    let node = TestNode::start().await;
    let (alice, bob, _room) = two_in_a_room(&node).await;
    let device_key = upload_device(&alice, 0).await;
    let (master, ssk, usk) = (
        TestSigningKey::generate(),
        TestSigningKey::generate(),
        TestSigningKey::generate(),
    );
    let body = json!({
        "master_key": cross_key(&alice, "master", &master, None),
        "self_signing_key": cross_key(&alice, "self_signing", &ssk, Some(&master)),
        "user_signing_key": cross_key(&alice, "user_signing", &usk, Some(&master)),
    });
    // The first upload needs no authentication; an identical retry neither.
    alice
        .post_ok("/keys/device_signing/upload", body.clone())
        .await;
    alice
        .post_ok("/keys/device_signing/upload", body.clone())
        .await;

    let own = query(&alice, &alice.user_id).await;
    assert_eq!(
        own["master_keys"][&alice.user_id]["keys"],
        body["master_key"]["keys"]
    );
    assert!(
        own["self_signing_keys"][&alice.user_id].is_object(),
        "{own}"
    );
    assert!(
        own["user_signing_keys"][&alice.user_id].is_object(),
        "{own}"
    );
    let theirs = query(&bob, &alice.user_id).await;
    assert!(
        theirs["master_keys"][&alice.user_id].is_object(),
        "{theirs}"
    );
    assert!(
        theirs["user_signing_keys"].get(&alice.user_id).is_none(),
        "{theirs}"
    );

    // A self-signing key not signed by the master key is refused.
    let other = TestSigningKey::generate();
    assert_error(
        &alice
            .post(
                "/keys/device_signing/upload",
                json!({ "self_signing_key": cross_key(&alice, "self_signing", &other, Some(&other)) }),
            )
            .await,
        400,
        "M_INVALID_SIGNATURE",
    );

    // Replacing the keys needs the password.
    let new_master = TestSigningKey::generate();
    let replace = json!({ "master_key": cross_key(&alice, "master", &new_master, None) });
    let challenge = assert_status(
        &alice
            .post("/keys/device_signing/upload", replace.clone())
            .await,
        401,
    );
    assert!(challenge["flows"].is_array(), "{challenge}");

    // Sign the device with the self-signing key: the signature shows in queries.
    let stored = &own["device_keys"][&alice.user_id][&alice.device_id];
    let ssk_id = format!("ed25519:{}", ssk.public());
    let mut signed = stored.clone();
    signed.as_object_mut().expect("object").remove("unsigned");
    let sig = ssk.sign_json(&signed);
    signed["signatures"] = json!({ &alice.user_id: { &ssk_id: sig } });
    let r = alice
        .post_ok(
            "/keys/signatures/upload",
            json!({ &alice.user_id: { &alice.device_id: signed } }),
        )
        .await;
    assert_eq!(r["failures"], json!({}), "{r}");
    let q = query(&bob, &alice.user_id).await;
    assert_eq!(
        q["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id][&ssk_id],
        json!(sig),
        "{q}"
    );
    // The device's own signature is still there.
    let device_sig_id = format!("ed25519:{}", alice.device_id);
    assert!(
        q["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id]
            [&device_sig_id]
            .is_string()
    );

    // A bad signature is reported as a failure and not stored.
    let mut bad = stored.clone();
    bad["signatures"] = json!({ &alice.user_id: { &ssk_id: device_key.sign_json(stored) } });
    let r = alice
        .post_ok(
            "/keys/signatures/upload",
            json!({ &alice.user_id: { &alice.device_id: bad } }),
        )
        .await;
    assert_eq!(
        r["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE",
        "{r}"
    );

    // With the password the master key is replaced.
    let mut with_auth = replace.clone();
    with_auth["auth"] = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": alice.user_id },
        "password": PASSWORD,
        "session": challenge["session"],
    });
    alice
        .post_ok("/keys/device_signing/upload", with_auth)
        .await;
    let q = query(&alice, &alice.user_id).await;
    assert_eq!(
        q["master_keys"][&alice.user_id]["keys"],
        replace["master_key"]["keys"]
    );
}

// -------------------------------------------------------------------------- key backup

fn backup_key(first_message_index: i64, verified: bool, marker: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": 0,
        "is_verified": verified,
        "session_data": { "ephemeral": marker, "ciphertext": marker, "mac": marker },
    })
}

#[tokio::test]
async fn key_backup_versions_and_keys() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    assert_error(&alice.get("/room_keys/version").await, 404, "M_NOT_FOUND");

    let v1 = alice
        .post_ok(
            "/room_keys/version",
            json!({ "algorithm": algorithm, "auth_data": { "public_key": "abc" } }),
        )
        .await["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let latest = alice.get_ok("/room_keys/version").await;
    assert_eq!(latest["version"], v1);
    assert_eq!(latest["count"], 0);
    assert_eq!(latest["auth_data"], json!({ "public_key": "abc" }));
    // Another user's backups are not visible.
    assert_error(&bob.get("/room_keys/version").await, 404, "M_NOT_FOUND");

    let room = "!room:example.org";
    let put = alice
        .put_ok(
            &format!("/room_keys/keys?version={v1}"),
            json!({ "rooms": { room: { "sessions": { "s1": backup_key(5, false, "a"), "s2": backup_key(0, true, "b") } } } }),
        )
        .await;
    assert_eq!(put["count"], 2, "{put}");
    let etag1 = put["etag"].as_str().expect("etag").to_owned();

    // A worse key does not replace a better one; a better one does.
    let worse = alice
        .put_ok(
            &format!("/room_keys/keys/{}/s1?version={v1}", enc(room)),
            backup_key(9, false, "worse"),
        )
        .await;
    assert_eq!(worse["etag"], etag1, "nothing changed: {worse}");
    let better = alice
        .put_ok(
            &format!("/room_keys/keys/{}?version={v1}", enc(room)),
            json!({ "sessions": { "s1": backup_key(1, false, "better") } }),
        )
        .await;
    assert_ne!(better["etag"], etag1);
    let s1 = alice
        .get_ok(&format!("/room_keys/keys/{}/s1?version={v1}", enc(room)))
        .await;
    assert_eq!(s1, backup_key(1, false, "better"));
    let all = alice.get_ok(&format!("/room_keys/keys?version={v1}")).await;
    assert_eq!(
        all["rooms"][room]["sessions"]["s2"],
        backup_key(0, true, "b")
    );
    let per_room = alice
        .get_ok(&format!("/room_keys/keys/{}?version={v1}", enc(room)))
        .await;
    assert_eq!(per_room["sessions"].as_object().map(|m| m.len()), Some(2));
    assert_error(
        &alice
            .get(&format!("/room_keys/keys/{}/nope?version={v1}", enc(room)))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&alice.get("/room_keys/keys").await, 400, "M_MISSING_PARAM");

    // Delete one session.
    let del = alice
        .call(
            reqwest::Method::DELETE,
            &format!("/room_keys/keys/{}/s2?version={v1}", enc(room)),
            None,
        )
        .await;
    assert_eq!(assert_status(&del, 200)["count"], 1);

    // A new version becomes current: the old one takes no more keys.
    let v2 = alice
        .post_ok(
            "/room_keys/version",
            json!({ "algorithm": algorithm, "auth_data": {} }),
        )
        .await["version"]
        .as_str()
        .expect("version")
        .to_owned();
    assert_ne!(v1, v2);
    let wrong = assert_error(
        &alice
            .put(
                &format!("/room_keys/keys?version={v1}"),
                json!({ "rooms": {} }),
            )
            .await,
        403,
        "M_WRONG_ROOM_KEYS_VERSION",
    );
    assert_eq!(wrong["current_version"], v2);

    // Update auth_data; the algorithm cannot change.
    alice
        .put_ok(
            &format!("/room_keys/version/{v2}"),
            json!({ "algorithm": algorithm, "auth_data": { "x": 1 }, "version": v2 }),
        )
        .await;
    assert_eq!(
        alice.get_ok(&format!("/room_keys/version/{v2}")).await["auth_data"],
        json!({ "x": 1 })
    );
    assert_error(
        &alice
            .put(
                &format!("/room_keys/version/{v2}"),
                json!({ "algorithm": "other", "auth_data": {} }),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // Deleting the current version makes the older one the latest.
    let del = alice
        .call(
            reqwest::Method::DELETE,
            &format!("/room_keys/version/{v2}"),
            None,
        )
        .await;
    assert_status(&del, 200);
    assert_error(
        &alice.get(&format!("/room_keys/version/{v2}")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(alice.get_ok("/room_keys/version").await["version"], v1);
    assert_error(
        &alice.get("/room_keys/version/banana").await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn sync_reports_one_time_key_counts() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let s = alice.sync(None, 0).await;
    assert_eq!(
        s["device_one_time_keys_count"]["signed_curve25519"], 0,
        "{s}"
    );
    assert_eq!(s["device_unused_fallback_key_types"], json!([]), "{s}");
    upload_device(&alice, 3).await;
    let s = alice.sync(None, 0).await;
    assert_eq!(
        s["device_one_time_keys_count"]["signed_curve25519"], 3,
        "{s}"
    );
}
