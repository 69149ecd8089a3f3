//! `POST /account/deactivate`: user-interactive auth with the password, then the account is
//! locked, logged out everywhere, out of its rooms, and its name stays taken.

use neurite_tests::{TestNode, TestSigningKey, User, assert_error, enc, signed_device_keys};
use reqwest::Method;
use serde_json::{Value, json};

fn password_auth(user: &User, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.user_id },
        "password": password,
    });
    if let Some(s) = session {
        auth["session"] = json!(s);
    }
    auth
}

#[tokio::test]
async fn deactivation_locks_the_account_and_leaves_its_rooms() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let second_device = node.login("alice", "correct horse").await;
    alice
        .put_ok(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({ "displayname": "Alice" }),
        )
        .await;
    alice
        .post_ok(
            "/keys/upload",
            json!({ "device_keys": signed_device_keys(&alice, &TestSigningKey::generate()) }),
        )
        .await;
    let joined = bob.create_room(json!({})).await;
    bob.invite(&joined, &alice.user_id).await;
    alice.join(&joined).await;
    let invited = bob.create_room(json!({})).await;
    bob.invite(&invited, &alice.user_id).await;

    // First call: the 401 challenge with the password flow.
    let (s, challenge) = alice.post("/account/deactivate", json!({})).await;
    assert_eq!(s, 401, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    let session = challenge["session"].as_str().expect("session").to_owned();

    let done = alice
        .post_ok(
            "/account/deactivate",
            json!({ "auth": password_auth(&alice, "correct horse", Some(&session)), "erase": true }),
        )
        .await;
    assert_eq!(done, json!({ "id_server_unbind_result": "no-support" }));

    // Every device is logged out.
    assert_error(&alice.get("/account/whoami").await, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &second_device.get("/account/whoami").await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // Login is refused as deactivated.
    let (s, body) = node
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": "correct horse",
            })),
        )
        .await;
    assert_error(&(s, body), 403, "M_USER_DEACTIVATED");
    // The name cannot be registered again.
    let (s, body) = node
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "alice", "password": "x", "auth": { "type": "m.login.dummy" } })),
        )
        .await;
    assert_error(&(s, body), 400, "M_USER_IN_USE");
    // The profile is cleared.
    let (s, profile) = bob.get(&format!("/profile/{}", enc(&alice.user_id))).await;
    assert!(
        s == 404 || profile.get("displayname").is_none(),
        "profile kept: {profile}"
    );
    // Alice left the room she had joined and declined the invite.
    for room in [&joined, &invited] {
        let member = bob
            .get_ok(&format!(
                "/rooms/{}/state/m.room.member/{}",
                enc(room),
                enc(&alice.user_id)
            ))
            .await;
        assert_eq!(member["membership"], "leave", "in {room}");
    }
    // Her device keys are gone.
    let keys = bob
        .post_ok(
            "/keys/query",
            json!({ "device_keys": { alice.user_id.clone(): [] } }),
        )
        .await;
    let devices = &keys["device_keys"][&alice.user_id];
    assert!(
        devices.as_object().is_none_or(|d| d.is_empty()),
        "devices left: {keys}"
    );
}

#[tokio::test]
async fn deactivation_needs_the_right_password() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let (s, body) = alice
        .post(
            "/account/deactivate",
            json!({ "auth": password_auth(&alice, "wrong", None) }),
        )
        .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert!(body["session"].is_string());
    // Another user's identifier is refused as well.
    let bob = node.register("bob").await;
    let (s, body) = alice
        .post(
            "/account/deactivate",
            json!({ "auth": password_auth(&bob, "correct horse", None) }),
        )
        .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    // Still active.
    alice.get_ok("/account/whoami").await;
}

#[tokio::test]
async fn bad_deactivation_requests_get_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    assert_error(
        &alice
            .post(
                "/account/deactivate",
                json!({ "auth": password_auth(&alice, "correct horse", None), "erase": "yes" }),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    let (s, body) = node
        .request(
            Method::POST,
            "/_matrix/client/v3/account/deactivate",
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&(s, body), 401, "M_MISSING_TOKEN");
    alice.get_ok("/account/whoami").await;
}
