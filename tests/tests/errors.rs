//! Bad input: every request a client can get wrong answers with the Matrix error the spec
//! requires, with both `errcode` and `error` in the body, and never with a 500.
//!
//! Ports the error-path parts of these Complement client-server scenarios
//! (matrix-org/complement, tests/csapi): `TestLogout` (missing and unknown tokens),
//! `TestServerCapabilities` (unauthenticated access) and the "rejects invalid utf-8 in
//! JSON" item listed as to-do in apidoc_register_test.go; the rest follows the
//! spec's "Standard error response" and "Common error codes" sections.

use neurite_tests::{TestNode, assert_error, enc};
use reqwest::Method;
use serde_json::json;

const LOGIN: &str = "/_matrix/client/v3/login";

// ---------------------------------------------------------------- M_NOT_JSON

#[tokio::test]
async fn body_not_json_is_rejected_with_not_json() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    // Unauthenticated endpoints.
    for body in [&b"not json"[..], b"{", b"{\"type\": }", b"\"unterminated"] {
        let resp = node
            .request_raw(Method::POST, LOGIN, None, body.to_vec())
            .await;
        assert_error(&resp, 400, "M_NOT_JSON");
        let resp = node
            .request_raw(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                body.to_vec(),
            )
            .await;
        assert_error(&resp, 400, "M_NOT_JSON");
    }
    // Authenticated endpoints.
    let room = alice.create_room(json!({})).await;
    let send = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
        enc(&room)
    );
    let resp = node
        .request_raw(
            Method::PUT,
            &send,
            Some(&alice.token),
            b"{\"body\": ".to_vec(),
        )
        .await;
    assert_error(&resp, 400, "M_NOT_JSON");
    let resp = node
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            b"<room/>".to_vec(),
        )
        .await;
    assert_error(&resp, 400, "M_NOT_JSON");
}

#[tokio::test]
async fn body_with_invalid_utf8_is_rejected_with_not_json() {
    let node = TestNode::start().await;
    let mut body = b"{\"username\": \"bad-".to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(
        b"\", \"password\": \"sUp3rs3kr1t\", \"auth\": {\"type\": \"m.login.dummy\"}}",
    );
    let resp = node
        .request_raw(Method::POST, "/_matrix/client/v3/register", None, body)
        .await;
    assert_error(&resp, 400, "M_NOT_JSON");
}

// ---------------------------------------------------------------- M_BAD_JSON

#[tokio::test]
async fn body_of_wrong_shape_is_rejected_with_bad_json() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    // Valid JSON that is not an object.
    for body in [json!([]), json!("m.login.password"), json!(7), json!(null)] {
        let resp = node
            .request(Method::POST, LOGIN, None, Some(body.clone()))
            .await;
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    // An object with a field of the wrong type.
    let resp = node
        .request(Method::POST, LOGIN, None, Some(json!({ "type": 1 })))
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    let resp = node
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": ["alice"], "auth": { "type": "m.login.dummy" } })),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    let resp = alice
        .post("/createRoom", json!({ "invite": "not-a-list" }))
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    let resp = alice.post("/createRoom", json!({ "name": 12 })).await;
    assert_error(&resp, 400, "M_BAD_JSON");
    // An event body that is not an object.
    let room = alice.create_room(json!({})).await;
    let resp = alice
        .call(
            Method::PUT,
            &format!("/rooms/{}/send/m.room.message/t1", enc(&room)),
            Some(json!(["hello"])),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    let resp = alice
        .call(
            Method::POST,
            &format!("/rooms/{}/invite", enc(&room)),
            Some(json!({ "user_id": 5 })),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
}

// ---------------------------------------------------------------- M_MISSING_TOKEN

#[tokio::test]
async fn missing_token_is_rejected() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let requests = [
        (Method::GET, "/_matrix/client/v3/sync".to_owned(), None),
        (
            Method::GET,
            "/_matrix/client/v3/account/whoami".to_owned(),
            None,
        ),
        (
            Method::GET,
            "/_matrix/client/v3/capabilities".to_owned(),
            None,
        ),
        (
            Method::GET,
            "/_matrix/client/v3/joined_rooms".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/_matrix/client/v3/logout".to_owned(),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/_matrix/client/v3/createRoom".to_owned(),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room)
            ),
            Some(json!({ "msgtype": "m.text", "body": "hi" })),
        ),
        (
            Method::GET,
            format!(
                "/_matrix/client/v3/user/{}/account_data/x",
                enc(&alice.user_id)
            ),
            None,
        ),
        (Method::GET, "/_matrix/client/r0/sync".to_owned(), None),
    ];
    for (method, path, body) in requests {
        let resp = node.request(method, &path, None, body).await;
        assert_error(&resp, 401, "M_MISSING_TOKEN");
    }
    // An empty query parameter is no token either.
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v3/account/whoami?access_token=",
            None,
            None,
        )
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn missing_token_is_reported_before_bad_body() {
    let node = TestNode::start().await;
    let resp = node
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            None,
            b"not json".to_vec(),
        )
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
}

// ---------------------------------------------------------------- M_UNKNOWN_TOKEN

#[tokio::test]
async fn unknown_token_is_rejected() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    for token in [
        "invalidAccessToken",
        "nrt_0000000000000000000000000000000000000000",
    ] {
        let resp = node
            .request(Method::GET, "/_matrix/client/v3/sync", Some(token), None)
            .await;
        let body = assert_error(&resp, 401, "M_UNKNOWN_TOKEN");
        if let Some(soft) = body.get("soft_logout") {
            assert!(soft.is_boolean(), "soft_logout is a boolean: {body}");
        }
        let resp = node
            .request(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(token),
                Some(json!({})),
            )
            .await;
        assert_error(&resp, 401, "M_UNKNOWN_TOKEN");
    }
    // The same through the query parameter.
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v3/account/whoami?access_token=invalidAccessToken",
            None,
            None,
        )
        .await;
    assert_error(&resp, 401, "M_UNKNOWN_TOKEN");
    // A valid token through the query parameter works.
    let resp = node
        .request(
            Method::GET,
            &format!(
                "/_matrix/client/v3/account/whoami?access_token={}",
                enc(&alice.token)
            ),
            None,
            None,
        )
        .await;
    assert_eq!(resp.0, 200, "{}", resp.1);
    assert_eq!(resp.1["user_id"], alice.user_id.as_str());
}

#[tokio::test]
async fn token_of_logged_out_device_is_unknown() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    alice.post_ok("/logout", json!({})).await;
    assert_error(&alice.get("/account/whoami").await, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &alice.post("/logout", json!({})).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

// ---------------------------------------------------------------- 404 M_UNRECOGNIZED

#[tokio::test]
async fn unknown_path_is_unrecognized() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let paths = [
        "/_matrix/client/v3/no_such_endpoint".to_owned(),
        "/_matrix/client/r0/no_such_endpoint".to_owned(),
        "/_matrix/client/v1/no_such_endpoint".to_owned(),
        "/_matrix/client/unstable/no_such_endpoint".to_owned(),
        "/_matrix/client/v9/sync".to_owned(),
        "/_matrix/nothing_here".to_owned(),
        "/not_matrix_at_all".to_owned(),
        format!("/_matrix/client/v3/rooms/{}/no_such_thing", enc(&room)),
    ];
    for path in &paths {
        for token in [None, Some(alice.token.as_str())] {
            let resp = node.request(Method::GET, path, token, None).await;
            assert_error(&resp, 404, "M_UNRECOGNIZED");
            let resp = node
                .request(Method::POST, path, token, Some(json!({})))
                .await;
            assert_error(&resp, 404, "M_UNRECOGNIZED");
        }
    }
}

// ---------------------------------------------------------------- 405 M_UNRECOGNIZED

#[tokio::test]
async fn wrong_method_on_known_path_is_unrecognized() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let requests = [
        (Method::GET, "/_matrix/client/v3/register".to_owned()),
        (Method::PUT, "/_matrix/client/v3/login".to_owned()),
        (Method::DELETE, "/_matrix/client/v3/login".to_owned()),
        (Method::GET, "/_matrix/client/v3/logout".to_owned()),
        (Method::POST, "/_matrix/client/v3/sync".to_owned()),
        (
            Method::DELETE,
            "/_matrix/client/v3/account/whoami".to_owned(),
        ),
        (Method::POST, "/_matrix/client/versions".to_owned()),
        (Method::GET, "/_matrix/client/r0/createRoom".to_owned()),
        (
            Method::GET,
            format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room)
            ),
        ),
        (
            Method::POST,
            format!("/_matrix/client/v1/rooms/{}/relations/$event", enc(&room)),
        ),
    ];
    for (method, path) in requests {
        for token in [None, Some(alice.token.as_str())] {
            let resp = node
                .request(method.clone(), &path, token, Some(json!({})))
                .await;
            assert_error(&resp, 405, "M_UNRECOGNIZED");
        }
    }
}

// ---------------------------------------------------------------- 413 M_TOO_LARGE

#[tokio::test]
async fn oversized_body_is_rejected_with_too_large() {
    let node = TestNode::start_with(|c| c.max_request_bytes = 2048).await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let big = "x".repeat(4096);
    let resp = node
        .request(
            Method::POST,
            LOGIN,
            None,
            Some(json!({ "type": "m.login.password", "user": "alice", "password": big })),
        )
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    let resp = alice
        .put(
            &format!("/rooms/{}/send/m.room.message/big", enc(&room)),
            json!({ "msgtype": "m.text", "body": big }),
        )
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    // Bytes that are not even JSON are refused for their size first.
    let resp = node
        .request_raw(Method::POST, LOGIN, None, vec![b'!'; 10_000])
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    // A body under the limit still works, and nothing was sent.
    let small = alice.send_text(&room, "small").await;
    let messages = alice
        .get_ok(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room)))
        .await;
    let bodies: Vec<&str> = messages["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["small"], "only the small message was sent");
    assert!(small.starts_with('$'));
}

// ---------------------------------------------------------------- 403 M_FORBIDDEN

#[tokio::test]
async fn room_action_without_membership_is_forbidden() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let r = enc(&room);
    assert_error(
        &bob.put(
            &format!("/rooms/{r}/send/m.room.message/t1"),
            json!({ "msgtype": "m.text", "body": "let me in" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.put(
            &format!("/rooms/{r}/state/m.room.name"),
            json!({ "name": "mine" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.get(&format!("/rooms/{r}/messages?dir=b")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.get(&format!("/rooms/{r}/state")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.post(
            &format!("/rooms/{r}/invite"),
            json!({ "user_id": bob.user_id }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Joining an invite-only room without an invite.
    assert_error(
        &bob.post(&format!("/join/{r}"), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn room_action_without_power_is_forbidden() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let r = enc(&room);
    // Bob is a member with the default power level 0.
    bob.send_text(&room, "hello").await;
    assert_error(
        &bob.put(
            &format!("/rooms/{r}/state/m.room.name"),
            json!({ "name": "bob's" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.put(
            &format!("/rooms/{r}/state/m.room.power_levels"),
            json!({ "users": { bob.user_id.clone(): 100 } }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.post(
            &format!("/rooms/{r}/kick"),
            json!({ "user_id": alice.user_id, "reason": "mutiny" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.post(
            &format!("/rooms/{r}/ban"),
            json!({ "user_id": alice.user_id }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // State keyed by another user's id is theirs alone.
    assert_error(
        &bob.put(
            &format!("/rooms/{r}/state/m.room.member/{}", enc(&alice.user_id)),
            json!({ "membership": "leave" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Alice is still joined and the room name is unchanged.
    let member = alice
        .get_ok(&format!(
            "/rooms/{r}/state/m.room.member/{}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(member["membership"], "join");
    assert_error(
        &alice.get(&format!("/rooms/{r}/state/m.room.name")).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn room_action_after_leaving_is_forbidden() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    bob.post_ok(&format!("/rooms/{}/leave", enc(&room)), json!({}))
        .await;
    assert_error(
        &bob.put(
            &format!("/rooms/{}/send/m.room.message/t1", enc(&room)),
            json!({ "msgtype": "m.text", "body": "ghost" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
}
