//! Device management: get, rename, delete (with user-interactive auth), and what deleting a
//! device takes with it (its tokens, keys and to-device inbox).
//!
//! Ports the Complement client-server scenario `TestDeviceManagement`
//! (matrix-org/complement, tests/csapi/apidoc_device_management_test.go).

use neurite_tests::{
    TestNode, TestSigningKey, User, assert_error, assert_status, device_list_has, enc,
    login_on_device, next_batch, signed_device_keys, to_device_events,
};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";

/// A password `auth` object for `user`.
fn password_auth(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    })
}

/// `DELETE /devices/{id}` with an optional body.
async fn delete_device(
    user: &User,
    device: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    user.call(Method::DELETE, &format!("/devices/{}", enc(device)), body)
        .await
}

#[tokio::test]
async fn get_device_shows_its_display_name_and_unknown_devices_are_404() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let (status, _) = node
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": alice.user_id },
                "password": PASSWORD,
                "device_id": "login_device",
                "initial_device_display_name": "device display",
            })),
        )
        .await;
    assert_eq!(status, 200);
    let d = alice.get_ok("/devices/login_device").await;
    assert_eq!(d["device_id"], "login_device");
    assert_eq!(d["display_name"], "device display");
    assert_error(
        &alice.get("/devices/unknown_device").await,
        404,
        "M_NOT_FOUND",
    );

    // GET /devices lists both devices.
    login_on_device(&node, "alice", PASSWORD, "login_device_2").await;
    let list = alice.get_ok("/devices").await;
    let ids: Vec<&str> = list["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    for want in ["login_device", "login_device_2", alice.device_id.as_str()] {
        assert!(ids.contains(&want), "{want} missing from {list}");
    }

    // Another user's device is not found.
    let bob = node.register("bob").await;
    assert_error(&bob.get("/devices/login_device").await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn put_device_updates_the_display_name() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    login_on_device(&node, "alice", PASSWORD, "login_device").await;
    alice
        .put_ok(
            "/devices/login_device",
            json!({ "display_name": "new device display" }),
        )
        .await;
    let d = alice.get_ok("/devices/login_device").await;
    assert_eq!(d["display_name"], "new device display");
    assert_error(
        &alice
            .put("/devices/unknown_device", json!({ "display_name": "x" }))
            .await,
        404,
        "M_NOT_FOUND",
    );
    // No display name: nothing changes.
    alice.put_ok("/devices/login_device", json!({})).await;
    assert_eq!(
        alice.get_ok("/devices/login_device").await["display_name"],
        "new device display"
    );
}

#[tokio::test]
async fn delete_device_needs_the_owners_password_and_logs_it_out() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let session2 = node.login("alice", PASSWORD).await;
    session2.sync(None, 0).await;

    // No body: the 401 challenge.
    let challenge = assert_status(&delete_device(&alice, &session2.device_id, None).await, 401);
    for field in ["session", "flows", "params"] {
        assert!(
            challenge.get(field).is_some(),
            "{field} missing: {challenge}"
        );
    }
    // Wrong password: 401 with M_FORBIDDEN.
    let wrong = delete_device(
        &alice,
        &session2.device_id,
        Some(json!({ "auth": password_auth(&alice.user_id, "super-wrong-password") })),
    )
    .await;
    let body = assert_error(&wrong, 401, "M_FORBIDDEN");
    for field in ["session", "flows", "params"] {
        assert!(body.get(field).is_some(), "{field} missing: {body}");
    }
    // Correct password.
    let ok = delete_device(
        &alice,
        &session2.device_id,
        Some(json!({ "auth": password_auth(&alice.user_id, PASSWORD) })),
    )
    .await;
    assert_status(&ok, 200);
    assert_error(
        &alice.get(&format!("/devices/{}", session2.device_id)).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&session2.get("/sync").await, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn delete_device_requires_ui_auth_user_to_match_device_owner() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let session2 = node.login("alice", PASSWORD).await;

    let as_bob = delete_device(
        &alice,
        &session2.device_id,
        Some(json!({ "auth": password_auth(&bob.user_id, PASSWORD) })),
    )
    .await;
    assert_error(&as_bob, 403, "M_FORBIDDEN");
    alice
        .get_ok(&format!("/devices/{}", session2.device_id))
        .await;

    let ok = delete_device(
        &alice,
        &session2.device_id,
        Some(json!({ "auth": password_auth(&alice.user_id, PASSWORD) })),
    )
    .await;
    assert_status(&ok, 200);
    assert_error(
        &alice.get(&format!("/devices/{}", session2.device_id)).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn delete_devices_deletes_several_with_ui_auth() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let d1 = login_on_device(&node, "alice", PASSWORD, "D1").await;
    let d2 = login_on_device(&node, "alice", PASSWORD, "D2").await;
    let body = json!({ "devices": ["D1", "D2"] });
    assert_status(&alice.post("/delete_devices", body).await, 401);
    alice
        .post_ok(
            "/delete_devices",
            json!({ "devices": ["D1", "D2", "NOT_MINE"], "auth": password_auth("alice", PASSWORD) }),
        )
        .await;
    for d in [&d1, &d2] {
        assert_error(&d.get("/account/whoami").await, 401, "M_UNKNOWN_TOKEN");
    }
    let list = alice.get_ok("/devices").await;
    assert_eq!(list["devices"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn deleting_a_device_drops_its_keys_and_inbox_and_tells_room_members() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let bob2 = login_on_device(&node, "bob", PASSWORD, "BOBTWO").await;
    let key = TestSigningKey::generate();
    bob2.upload_keys(json!({ "device_keys": signed_device_keys(&bob2, &key) }))
        .await;
    alice
        .send_to_device("m.test", json!({ &bob.user_id: { "BOBTWO": { "n": 1 } } }))
        .await;
    // The display name travels with the keys.
    bob.put_ok("/devices/BOBTWO", json!({ "display_name": "Bob's phone" }))
        .await;
    let q = alice
        .post_ok(
            "/keys/query",
            json!({ "device_keys": { &bob.user_id: [] } }),
        )
        .await;
    assert_eq!(
        q["device_keys"][&bob.user_id]["BOBTWO"]["unsigned"]["device_display_name"], "Bob's phone",
        "{q}"
    );
    let since = next_batch(&alice.sync(None, 0).await);

    bob.post_ok(
        "/delete_devices",
        json!({ "devices": ["BOBTWO"], "auth": password_auth("bob", PASSWORD) }),
    )
    .await;

    alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let q = alice
        .post_ok(
            "/keys/query",
            json!({ "device_keys": { &bob.user_id: [] } }),
        )
        .await;
    assert_eq!(q["device_keys"][&bob.user_id], json!({}), "keys gone: {q}");
    // Logging in again on the same device id starts with an empty inbox.
    let again = login_on_device(&node, "bob", PASSWORD, "BOBTWO").await;
    assert!(to_device_events(&again.sync(None, 0).await).is_empty());
}

#[tokio::test]
async fn logout_drops_the_devices_keys() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let key = TestSigningKey::generate();
    bob.upload_keys(json!({ "device_keys": signed_device_keys(&bob, &key) }))
        .await;
    let since = next_batch(&alice.sync(None, 0).await);
    bob.post_ok("/logout", json!({})).await;
    alice
        .sync_until(Some(&since), |s| {
            device_list_has(s, "changed", &bob.user_id)
        })
        .await;
    let q = alice
        .post_ok(
            "/keys/query",
            json!({ "device_keys": { &bob.user_id: [] } }),
        )
        .await;
    assert_eq!(q["device_keys"][&bob.user_id], json!({}), "{q}");
}
