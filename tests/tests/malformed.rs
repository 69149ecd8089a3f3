//! Malformed requests, as a hostile or careless app on the same phone may send them: each gets
//! a 4xx with a Matrix error body, and leaves nothing behind. One test per family: blank
//! bodies, over-long identifiers, over-long URLs, bad query parameters, filters outside the
//! spec's values, tokens that are not ASCII, bad alias names, state events of the wrong
//! shape, bad display names, and invites of strings that are not user ids.

use neurite_tests::{TestNode, User, assert_error, enc, query};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The ids of every event in a room, newest first (up to 100).
async fn event_ids(user: &User, room: &str) -> Vec<String> {
    let page = user.messages(room, &[("dir", "b"), ("limit", "100")]).await;
    neurite_tests::event_ids(&page["chunk"])
}

async fn joined_rooms(user: &User) -> Value {
    user.get_ok("/joined_rooms").await["joined_rooms"].clone()
}

#[tokio::test]
async fn empty_and_blank_bodies_are_not_json() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let before = (joined_rooms(&alice).await, event_ids(&alice, &room).await);
    let send = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
        enc(&room)
    );
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    for body in [&b""[..], b" ", b"\n\t \r\n"] {
        for (method, path) in [
            (Method::POST, "/_matrix/client/v3/createRoom"),
            (Method::PUT, send.as_str()),
            (Method::PUT, topic.as_str()),
        ] {
            let resp = node
                .request_raw(method, path, Some(&alice.token), body.to_vec())
                .await;
            assert_error(&resp, 400, "M_NOT_JSON");
        }
        let resp = node
            .request_raw(
                Method::POST,
                "/_matrix/client/v3/login",
                None,
                body.to_vec(),
            )
            .await;
        assert_error(&resp, 400, "M_NOT_JSON");
    }
    assert_eq!(
        (joined_rooms(&alice).await, event_ids(&alice, &room).await),
        before,
        "nothing was stored"
    );
}

#[tokio::test]
async fn over_long_identifiers_are_refused() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let before = event_ids(&alice, &room).await;
    let r = enc(&room);
    let long_type = format!("com.example.{}", "t".repeat(250));
    let long_key = "k".repeat(256);
    let long_txn = "x".repeat(4000);

    let resp = alice
        .put(
            &format!("/rooms/{r}/send/{}/t1", enc(&long_type)),
            json!({ "body": "x" }),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let resp = alice
        .put(
            &format!("/rooms/{r}/state/{}", enc(&long_type)),
            json!({ "v": 1 }),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let resp = alice
        .put(
            &format!("/rooms/{r}/state/com.example.s/{long_key}"),
            json!({ "v": 1 }),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let resp = alice
        .put(
            &format!("/rooms/{r}/send/m.room.message/{long_txn}"),
            json!({ "msgtype": "m.text", "body": "x" }),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    // The same limits hold inside createRoom.
    let rooms_before = joined_rooms(&alice).await;
    let resp = alice
        .post(
            "/createRoom",
            json!({ "initial_state": [{ "type": long_type, "content": {} }] }),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let resp = alice
        .post(
            "/createRoom",
            json!({ "initial_state": [{ "type": "com.example.s", "state_key": long_key, "content": {} }] }),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    assert_eq!(joined_rooms(&alice).await, rooms_before);
    assert_eq!(
        event_ids(&alice, &room).await,
        before,
        "no event was stored"
    );

    // Device ids of thousands of characters, at login and in the device API.
    let long_device = "D".repeat(4000);
    let resp = node
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": "correct horse",
                "device_id": long_device,
            })),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let resp = alice
        .put(
            &format!("/devices/{long_device}"),
            json!({ "display_name": "x" }),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let devices = alice.get_ok("/devices").await;
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(1),
        "no device was made: {devices}"
    );
}

#[tokio::test]
async fn over_long_urls_are_too_large() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let long = "a".repeat(20_000);
    let resp = alice
        .raw(
            Method::GET,
            &format!("/_matrix/client/v3/sync?filter={long}"),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::URI_TOO_LONG);
    assert_error(&resp.as_error(), 414, "M_TOO_LARGE");
    let resp = alice
        .raw(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{long}/send/m.room.message/t1"),
            &[],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_error(&resp.as_error(), 414, "M_TOO_LARGE");
}

#[tokio::test]
async fn bad_query_parameters_are_invalid_params() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "visibility": "public" })).await;
    let event = alice.send_text(&room, "hello").await;
    let r = enc(&room);
    let bad = [
        format!("/rooms/{r}/messages?dir=b&limit=-1"),
        format!("/rooms/{r}/messages?dir=b&limit=ten"),
        format!("/rooms/{r}/messages?dir=b&from=garbage"),
        format!("/rooms/{r}/messages?dir=b&to=garbage"),
        format!("/rooms/{r}/context/{}?limit=-5", enc(&event)),
        "/publicRooms?limit=abc".to_owned(),
        "/publicRooms?limit=-2".to_owned(),
        "/publicRooms?since=garbage".to_owned(),
        "/sync?since=garbage".to_owned(),
        "/sync?timeout=soon".to_owned(),
        format!("/rooms/{r}/members?at=garbage"),
        format!("/rooms/{r}/members?membership=joined"),
        format!("/rooms/{r}/members?not_membership=everyone"),
        format!("/rooms/{r}/relations/{}?from=garbage", enc(&event)),
        "/notifications?from=garbage".to_owned(),
        "/keys/changes?from=garbage&to=garbage".to_owned(),
        "/sync?set_presence=busy".to_owned(),
    ];
    for path in &bad {
        let resp = alice.get(path).await;
        assert_eq!(
            resp.1["errcode"], "M_INVALID_PARAM",
            "{path}: {} {}",
            resp.0, resp.1
        );
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    for body in [
        json!({ "limit": "10" }),
        json!({ "limit": -1 }),
        json!({ "since": "garbage" }),
    ] {
        let resp = alice.post("/publicRooms", body.clone()).await;
        assert_eq!(resp.1["errcode"], "M_INVALID_PARAM", "{body}: {}", resp.1);
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    // The same parameters, well-formed, work.
    alice
        .get_ok(&format!("/rooms/{r}/messages?dir=b&limit=5"))
        .await;
    alice.get_ok("/publicRooms?limit=5").await;
    alice
        .get_ok(&format!("/rooms/{r}/members?membership=join"))
        .await;
    alice.post_ok("/publicRooms", json!({ "limit": 5 })).await;
}

#[tokio::test]
async fn filters_outside_the_spec_are_refused() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let me = enc(&alice.user_id);
    let bad = [
        json!({ "event_format": "xml" }),
        json!({ "event_format": 1 }),
        json!({ "event_fields": "content" }),
        json!({ "room": { "timeline": { "limit": -1 } } }),
        json!({ "room": { "timeline": { "limit": "ten" } } }),
        json!({ "presence": { "types": "m.presence" } }),
    ];
    for filter in &bad {
        let resp = alice
            .post(&format!("/user/{me}/filter"), filter.clone())
            .await;
        assert_eq!(resp.1["errcode"], "M_BAD_JSON", "{filter}: {}", resp.1);
        assert_error(&resp, 400, "M_BAD_JSON");
        let resp = alice
            .get(&format!(
                "/sync{}",
                query(&[("filter", &filter.to_string())])
            ))
            .await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    // Nothing was stored: the first valid filter gets the first id.
    let ok = alice
        .post_ok(
            &format!("/user/{me}/filter"),
            json!({ "event_format": "client" }),
        )
        .await;
    let id = ok["filter_id"].as_str().expect("filter_id");
    let (status, _) = alice.get(&format!("/user/{me}/filter/0")).await;
    assert!(
        id == "0" || status == StatusCode::NOT_FOUND,
        "a refused filter was stored (new id {id})"
    );
}

#[tokio::test]
async fn non_ascii_bearer_tokens_are_unknown_tokens() {
    let node = TestNode::start().await;
    let _alice = node.register("alice").await;
    let http = reqwest::Client::new();
    for token in [&b"t\xc3\xb6ken"[..], b"\xff\xfe", b"abc\x80"] {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(token);
        let header = reqwest::header::HeaderValue::from_bytes(&value).expect("obs-text header");
        let resp = http
            .get(format!("{}/_matrix/client/v3/account/whoami", node.url))
            .header(reqwest::header::AUTHORIZATION, header)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON error body");
        assert_error(&(status, body), 401, "M_UNKNOWN_TOKEN");
    }
}

#[tokio::test]
async fn alias_names_with_whitespace_or_colons_are_refused() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let before = joined_rooms(&alice).await;
    for name in [
        "has space",
        "a:b",
        "tab\there",
        "new\nline",
        " ",
        "nul\u{0}",
    ] {
        let resp = alice
            .post("/createRoom", json!({ "room_alias_name": name }))
            .await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    assert_eq!(joined_rooms(&alice).await, before, "no room was made");
    let alias = format!("#has space:{}", node.server_name());
    let (status, _) = alice.get(&format!("/directory/room/{}", enc(&alias))).await;
    assert_ne!(status, StatusCode::OK);
}

#[tokio::test]
async fn state_events_of_spec_types_must_have_their_shape() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let before = event_ids(&alice, &room).await;
    let r = enc(&room);
    let bad = [
        ("m.room.join_rules", json!({ "join_rule": 5 })),
        ("m.room.join_rules", json!({ "join_rule": "sometimes" })),
        ("m.room.join_rules", json!({})),
        ("m.room.power_levels", json!({ "ban": "50" })),
        ("m.room.power_levels", json!({ "kick": 1.5 })),
        (
            "m.room.power_levels",
            json!({ "users": { &alice.user_id: "high" } }),
        ),
        (
            "m.room.power_levels",
            json!({ "events": { "m.room.name": [] } }),
        ),
        (
            "m.room.power_levels",
            json!({ "users": { "not a user": 10 } }),
        ),
        (
            "m.room.history_visibility",
            json!({ "history_visibility": "everyone" }),
        ),
        ("m.room.guest_access", json!({ "guest_access": true })),
        ("m.room.name", json!({ "name": ["x"] })),
        ("m.room.topic", json!({ "topic": 7 })),
        ("m.room.canonical_alias", json!({ "alias": "not an alias" })),
        ("m.room.encryption", json!({ "algorithm": 1 })),
    ];
    for (ty, content) in &bad {
        let resp = alice
            .put(&format!("/rooms/{r}/state/{ty}"), content.clone())
            .await;
        assert_eq!(
            resp.1["errcode"], "M_BAD_JSON",
            "{ty} {content}: {}",
            resp.1
        );
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    assert_eq!(event_ids(&alice, &room).await, before, "nothing was stored");
    assert_eq!(
        alice.state_content(&room, "m.room.join_rules", "").await["join_rule"],
        "invite"
    );

    // The same checks hold for createRoom's initial state and power level overrides.
    let rooms_before = joined_rooms(&alice).await;
    let resp = alice
        .post(
            "/createRoom",
            json!({ "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": 1 } }] }),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    let resp = alice
        .post(
            "/createRoom",
            json!({ "power_level_content_override": { "users_default": "lots" } }),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    assert_eq!(joined_rooms(&alice).await, rooms_before);
}

#[tokio::test]
async fn display_names_must_be_given_and_short() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let path = format!("/profile/{}/displayname", enc(&alice.user_id));
    alice.put_ok(&path, json!({ "displayname": "Alice" })).await;
    let resp = alice.put(&path, json!({})).await;
    assert_error(&resp, 400, "M_MISSING_PARAM");
    let resp = alice.put(&path, json!({ "displayname": 5 })).await;
    assert_error(&resp, 400, "M_BAD_JSON");
    let resp = alice
        .put(&path, json!({ "displayname": "n".repeat(257) }))
        .await;
    assert_error(&resp, 400, "M_TOO_LARGE");
    alice
        .put_ok(&path, json!({ "displayname": "n".repeat(256) }))
        .await;
    let resp = alice
        .put(&path, json!({ "displayname": "é".repeat(257) }))
        .await;
    assert_error(&resp, 400, "M_TOO_LARGE");
    assert_eq!(alice.get_ok(&path).await["displayname"], "n".repeat(256));
}

#[tokio::test]
async fn invites_of_strings_that_are_not_user_ids_are_refused() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let before = event_ids(&alice, &room).await;
    let server = node.server_name();
    let bad = [
        format!("@bob smith:{server}"),
        format!("@bob\t:{server}"),
        format!("@bob\u{7}:{server}"),
        format!("@bob\u{202e}:{server}"),
        format!("@\u{1F600}:{server}"),
        format!("@a\u{200d}b:{server}"),
        format!("@bob:{server} "),
        "@bob:bad server".to_owned(),
        "bob".to_owned(),
        format!("@{}:{server}", "b".repeat(300)),
    ];
    for user in &bad {
        let resp = alice
            .post(
                &format!("/rooms/{}/invite", enc(&room)),
                json!({ "user_id": user }),
            )
            .await;
        assert_eq!(resp.1["errcode"], "M_INVALID_PARAM", "{user:?}: {}", resp.1);
        assert_error(&resp, 400, "M_INVALID_PARAM");
        let resp = alice.post("/createRoom", json!({ "invite": [user] })).await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    assert_eq!(event_ids(&alice, &room).await, before, "nothing was stored");
    assert_eq!(joined_rooms(&alice).await.as_array().map(Vec::len), Some(1));
}
