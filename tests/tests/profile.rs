//! Profiles and account data.
//!
//! Ports these Complement client-server scenarios (matrix-org/complement, tests/csapi):
//! - `TestAddAccountData` (account_data_test.go)
//! - `TestProfileDisplayName` (apidoc_profile_displayname_test.go)
//!
//! plus the errors the spec gives these endpoints (someone else's data, unset data,
//! server-managed types, wrong body shapes).

use neurite_tests::{TestNode, assert_error, assert_status, enc};
use reqwest::Method;
use serde_json::json;

// ---------------------------------------------------------------- TestAddAccountData

#[tokio::test]
async fn global_account_data_can_be_set_and_replaced() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let path = format!("/user/{}/account_data/test.key", enc(&alice.user_id));
    alice.put_ok(&path, json!({ "value": "first" })).await;
    assert_eq!(alice.get_ok(&path).await, json!({ "value": "first" }));
    alice.put_ok(&path, json!({ "value": "second" })).await;
    assert_eq!(alice.get_ok(&path).await, json!({ "value": "second" }));
}

#[tokio::test]
async fn room_account_data_can_be_set_and_replaced() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = format!(
        "/user/{}/rooms/{}/account_data/test.key",
        enc(&alice.user_id),
        enc(&room)
    );
    alice.put_ok(&path, json!({ "value": "room first" })).await;
    assert_eq!(alice.get_ok(&path).await, json!({ "value": "room first" }));
    alice.put_ok(&path, json!({ "value": "room second" })).await;
    assert_eq!(alice.get_ok(&path).await, json!({ "value": "room second" }));
    // Room account data is separate from global account data of the same type.
    let global = format!("/user/{}/account_data/test.key", enc(&alice.user_id));
    assert_error(&alice.get(&global).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn account_data_appears_in_sync() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .put_ok(
            &format!("/user/{}/account_data/test.key", enc(&alice.user_id)),
            json!({ "value": "global" }),
        )
        .await;
    alice
        .put_ok(
            &format!(
                "/user/{}/rooms/{}/account_data/test.key",
                enc(&alice.user_id),
                enc(&room)
            ),
            json!({ "value": "in room" }),
        )
        .await;
    let has = |events: &serde_json::Value, value: &str| {
        events.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["type"] == "test.key" && e["content"]["value"] == value)
        })
    };
    alice
        .sync_until(None, |s| {
            has(&s["account_data"]["events"], "global")
                && has(
                    &s["rooms"]["join"][&room]["account_data"]["events"],
                    "in room",
                )
        })
        .await;
}

#[tokio::test]
async fn account_data_unset_type_is_not_found() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let global = format!("/user/{}/account_data/never.set", enc(&alice.user_id));
    assert_error(&alice.get(&global).await, 404, "M_NOT_FOUND");
    let in_room = format!(
        "/user/{}/rooms/{}/account_data/never.set",
        enc(&alice.user_id),
        enc(&room)
    );
    assert_error(&alice.get(&in_room).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn account_data_of_another_user_is_forbidden() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let path = format!("/user/{}/account_data/test.key", enc(&alice.user_id));
    alice.put_ok(&path, json!({ "value": "mine" })).await;
    assert_error(&bob.get(&path).await, 403, "M_FORBIDDEN");
    assert_error(
        &bob.put(&path, json!({ "value": "yours" })).await,
        403,
        "M_FORBIDDEN",
    );
    let room = alice.create_room(json!({})).await;
    let in_room = format!(
        "/user/{}/rooms/{}/account_data/test.key",
        enc(&alice.user_id),
        enc(&room)
    );
    assert_error(
        &bob.put(&in_room, json!({ "value": "yours" })).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&bob.get(&in_room).await, 403, "M_FORBIDDEN");
    // Nothing changed.
    assert_eq!(alice.get_ok(&path).await, json!({ "value": "mine" }));
}

#[tokio::test]
async fn account_data_server_managed_types_are_refused() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let global = format!("/user/{}/account_data/m.push_rules", enc(&alice.user_id));
    assert_error(&alice.put(&global, json!({})).await, 405, "M_BAD_JSON");
    let fully_read = format!(
        "/user/{}/rooms/{}/account_data/m.fully_read",
        enc(&alice.user_id),
        enc(&room)
    );
    assert_error(
        &alice.put(&fully_read, json!({ "event_id": "$x" })).await,
        405,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn account_data_body_must_be_an_object() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let path = format!("/user/{}/account_data/test.key", enc(&alice.user_id));
    assert_error(
        &alice.call(Method::PUT, &path, Some(json!(["a"]))).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.call(Method::PUT, &path, Some(json!("text"))).await,
        400,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn room_account_data_with_invalid_room_id_is_rejected() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let path = format!(
        "/user/{}/rooms/not-a-room/account_data/test.key",
        enc(&alice.user_id)
    );
    assert_error(
        &alice.put(&path, json!({ "value": 1 })).await,
        400,
        "M_INVALID_PARAM",
    );
}

// ---------------------------------------------------------------- TestProfileDisplayName

#[tokio::test]
async fn displayname_can_be_set() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let path = format!("/profile/{}/displayname", enc(&alice.user_id));
    alice
        .put_ok(&path, json!({ "displayname": "my_display_name" }))
        .await;
    assert_eq!(alice.get_ok(&path).await["displayname"], "my_display_name");
    let whole = alice
        .get_ok(&format!("/profile/{}", enc(&alice.user_id)))
        .await;
    assert_eq!(whole["displayname"], "my_display_name");
}

#[tokio::test]
async fn displayname_is_publicly_readable() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    alice
        .put_ok(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({ "displayname": "my_display_name" }),
        )
        .await;
    let path = format!(
        "/_matrix/client/v3/profile/{}/displayname",
        enc(&alice.user_id)
    );
    let body = assert_status(&node.request(Method::GET, &path, None, None).await, 200);
    assert_eq!(body["displayname"], "my_display_name");
    let whole = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    let body = assert_status(&node.request(Method::GET, &whole, None, None).await, 200);
    assert_eq!(body["displayname"], "my_display_name");
}

#[tokio::test]
async fn displayname_change_updates_room_membership() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .put_ok(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({ "displayname": "Alice Renamed" }),
        )
        .await;
    let member = alice
        .get_ok(&format!(
            "/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(member["displayname"], "Alice Renamed");
    assert_eq!(member["membership"], "join");
}

#[tokio::test]
async fn displayname_of_another_user_cannot_be_set() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let path = format!("/profile/{}/displayname", enc(&alice.user_id));
    alice.put_ok(&path, json!({ "displayname": "Alice" })).await;
    assert_error(
        &bob.put(&path, json!({ "displayname": "Not Alice" })).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(bob.get_ok(&path).await["displayname"], "Alice");
}

#[tokio::test]
async fn displayname_must_be_a_string() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let path = format!("/profile/{}/displayname", enc(&alice.user_id));
    assert_error(
        &alice.put(&path, json!({ "displayname": 42 })).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.call(Method::PUT, &path, Some(json!(["x"]))).await,
        400,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn displayname_requires_authentication_to_set() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let path = format!(
        "/_matrix/client/v3/profile/{}/displayname",
        enc(&alice.user_id)
    );
    let resp = node
        .request(
            Method::PUT,
            &path,
            None,
            Some(json!({ "displayname": "anon" })),
        )
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn profile_of_unknown_user_is_not_found() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let ghost = format!("@ghost:{}", node.server_name());
    assert_error(
        &alice.get(&format!("/profile/{}", enc(&ghost))).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice
            .get(&format!("/profile/{}/displayname", enc(&ghost)))
            .await,
        404,
        "M_NOT_FOUND",
    );
}
