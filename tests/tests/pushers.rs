//! Pushers (`/pushers`, `/pushers/set`) and the notification history (`/notifications`).
//!
//! Pushers: set, list, replace, `append`, delete with `kind: null`, bad input answered with
//! Matrix errors, and a pusher going away with the device that set it (logout, device
//! deletion) and with the account. Notifications: every event the user's push rules notify
//! for is listed newest first, `only=highlight` keeps mentions, pages follow `next_token`,
//! and a read receipt marks them read. Also the empty third-party lists settings screens ask
//! for (`/thirdparty/protocols`, `/account/3pid`).

use neurite_tests::{TestNode, User, assert_error, enc};
use reqwest::Method;
use serde_json::{Value, json};

const URL: &str = "https://push.example.org/_matrix/push/v1/notify";

fn http_pusher(app_id: &str, pushkey: &str) -> Value {
    json!({
        "app_id": app_id,
        "pushkey": pushkey,
        "kind": "http",
        "app_display_name": "Chat",
        "device_display_name": "Phone",
        "lang": "en",
        "data": { "url": URL, "format": "event_id_only" },
    })
}

async fn pushers(user: &User) -> Vec<Value> {
    user.get_ok("/pushers").await["pushers"]
        .as_array()
        .expect("pushers")
        .clone()
}

fn keys(list: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<_> = list
        .iter()
        .map(|p| {
            (
                p["app_id"].as_str().expect("app_id").to_owned(),
                p["pushkey"].as_str().expect("pushkey").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pair(a: &str, k: &str) -> (String, String) {
    (a.to_owned(), k.to_owned())
}

#[tokio::test]
async fn pushers_are_set_listed_replaced_appended_and_deleted() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    assert!(pushers(&alice).await.is_empty());

    let mut body = http_pusher("org.example.chat", "key1");
    body["profile_tag"] = json!("tag");
    alice.post_ok("/pushers/set", body).await;
    let list = pushers(&alice).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let p = &list[0];
    assert_eq!(p["kind"], "http");
    assert_eq!(p["app_display_name"], "Chat");
    assert_eq!(p["device_display_name"], "Phone");
    assert_eq!(p["lang"], "en");
    assert_eq!(p["profile_tag"], "tag");
    assert_eq!(p["data"], json!({ "url": URL, "format": "event_id_only" }));

    // Same app and key: replaced, not duplicated.
    let mut body = http_pusher("org.example.chat", "key1");
    body["lang"] = json!("de");
    alice.post_ok("/pushers/set", body).await;
    let list = pushers(&alice).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["lang"], "de");

    // Another app is another pusher.
    alice
        .post_ok("/pushers/set", http_pusher("org.example.other", "key1"))
        .await;
    alice
        .post_ok("/pushers/set", http_pusher("org.example.chat", "key2"))
        .await;
    assert_eq!(
        keys(&pushers(&alice).await),
        [
            pair("org.example.chat", "key1"),
            pair("org.example.chat", "key2"),
            pair("org.example.other", "key1"),
        ]
    );

    // The same app and key for another user: with `append` both keep it, without it the
    // other user's pusher goes.
    let bob = node.register("bob").await;
    assert!(pushers(&bob).await.is_empty());
    let mut body = http_pusher("org.example.chat", "key1");
    body["append"] = json!(true);
    bob.post_ok("/pushers/set", body).await;
    assert_eq!(pushers(&alice).await.len(), 3);
    assert_eq!(
        keys(&pushers(&bob).await),
        [pair("org.example.chat", "key1")]
    );
    bob.post_ok("/pushers/set", http_pusher("org.example.chat", "key2"))
        .await;
    assert_eq!(
        keys(&pushers(&alice).await),
        [
            pair("org.example.chat", "key1"),
            pair("org.example.other", "key1"),
        ]
    );
    alice
        .post_ok("/pushers/set", http_pusher("org.example.chat", "key2"))
        .await;

    // kind null deletes; deleting one that is not there is fine.
    for _ in 0..2 {
        alice
            .post_ok(
                "/pushers/set",
                json!({ "app_id": "org.example.chat", "pushkey": "key1", "kind": null }),
            )
            .await;
    }
    assert_eq!(
        keys(&pushers(&alice).await),
        [
            pair("org.example.chat", "key2"),
            pair("org.example.other", "key1")
        ]
    );

    // An email pusher needs no URL.
    alice
        .post_ok(
            "/pushers/set",
            json!({
                "app_id": "m.email", "pushkey": "alice@example.org", "kind": "email",
                "app_display_name": "Email", "device_display_name": "alice@example.org",
                "lang": "en", "data": {},
            }),
        )
        .await;
    assert_eq!(pushers(&alice).await.len(), 3);
}

#[tokio::test]
async fn bad_pushers_are_refused() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let with = |key: &str, value: Value| {
        let mut b = http_pusher("org.example.chat", "key");
        b[key] = value;
        b
    };
    let without = |key: &str| {
        let mut b = http_pusher("org.example.chat", "key");
        b.as_object_mut().expect("object").remove(key);
        b
    };
    let cases = [
        (with("kind", json!("sms")), "M_INVALID_PARAM"),
        (with("kind", json!(3)), "M_INVALID_PARAM"),
        (with("data", json!({})), "M_MISSING_PARAM"),
        (
            with("data", json!({ "url": "not a url" })),
            "M_INVALID_PARAM",
        ),
        (
            with("data", json!({ "url": "https://push.example.org/notify" })),
            "M_INVALID_PARAM",
        ),
        (
            with(
                "data",
                json!({ "url": "ftp://push.example.org/_matrix/push/v1/notify" }),
            ),
            "M_INVALID_PARAM",
        ),
        (with("data", json!({ "url": 5 })), "M_INVALID_PARAM"),
        (
            with("data", json!({ "url": URL, "format": "full" })),
            "M_INVALID_PARAM",
        ),
        (with("data", json!("x")), "M_INVALID_PARAM"),
        (with("app_id", json!("a".repeat(65))), "M_INVALID_PARAM"),
        (with("pushkey", json!("")), "M_INVALID_PARAM"),
        (with("append", json!("yes")), "M_INVALID_PARAM"),
        (without("pushkey"), "M_MISSING_PARAM"),
        (without("app_id"), "M_MISSING_PARAM"),
        (without("kind"), "M_MISSING_PARAM"),
        (without("data"), "M_MISSING_PARAM"),
        (without("lang"), "M_MISSING_PARAM"),
        (without("app_display_name"), "M_MISSING_PARAM"),
        (without("device_display_name"), "M_MISSING_PARAM"),
    ];
    for (body, errcode) in cases {
        let resp = alice.post("/pushers/set", body.clone()).await;
        assert_eq!(resp.0.as_u16(), 400, "{body}: {resp:?}");
        assert_eq!(resp.1["errcode"], errcode, "{body}: {resp:?}");
    }
    assert_error(
        &alice
            .call(
                Method::POST,
                "/pushers/set",
                Some(json!({ "app_id": "a", "pushkey": "k", "kind": "email",
                    "app_display_name": "E", "device_display_name": "D", "lang": "en",
                    "data": {} })),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert!(pushers(&alice).await.is_empty());
    // Without a token there is nothing to see.
    let (status, _) = node
        .request(Method::GET, "/_matrix/client/v3/pushers", None, None)
        .await;
    assert_eq!(status.as_u16(), 401);
}

#[tokio::test]
async fn pushers_go_with_their_device() {
    let node = TestNode::start().await;
    let phone = node.register("alice").await;
    let laptop = node.login("alice", "correct horse").await;
    let tablet = node.login("alice", "correct horse").await;
    phone
        .post_ok("/pushers/set", http_pusher("org.example.chat", "phone"))
        .await;
    laptop
        .post_ok("/pushers/set", http_pusher("org.example.chat", "laptop"))
        .await;
    tablet
        .post_ok("/pushers/set", http_pusher("org.example.chat", "tablet"))
        .await;
    assert_eq!(pushers(&tablet).await.len(), 3);

    // Logging out takes the device's pusher with it, and only that one.
    laptop.post_ok("/logout", json!({})).await;
    assert_eq!(
        keys(&pushers(&phone).await),
        [
            pair("org.example.chat", "phone"),
            pair("org.example.chat", "tablet")
        ]
    );

    // So does deleting a device (with user-interactive auth).
    let path = format!("/devices/{}", enc(&tablet.device_id));
    let (status, _) = phone.call(Method::DELETE, &path, Some(json!({}))).await;
    assert_eq!(status.as_u16(), 401);
    let (status, body) = phone
        .call(
            Method::DELETE,
            &path,
            Some(json!({ "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": phone.user_id },
                "password": "correct horse",
            }})),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(
        keys(&pushers(&phone).await),
        [pair("org.example.chat", "phone")]
    );
}

#[tokio::test]
async fn deactivation_removes_pushers() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    alice
        .post_ok("/pushers/set", http_pusher("org.example.chat", "key"))
        .await;
    alice
        .post_ok(
            "/account/deactivate",
            json!({ "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": alice.user_id },
                "password": "correct horse",
            }}),
        )
        .await;
    let count: i64 = node
        .node()
        .services()
        .db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM pushers", [], |r| r.get(0))?))
        .await
        .expect("count");
    assert_eq!(count, 0);
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

async fn notifications(user: &User, query: &str) -> Value {
    user.get_ok(&format!("/notifications{query}")).await
}

fn listed(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            n["event"]["event_id"]
                .as_str()
                .expect("event_id")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn notifications_are_listed_filtered_paginated_and_marked_read() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;
    assert!(listed(&notifications(&bob, "").await).is_empty());

    let first = alice.send_text(&room, "hello").await;
    let mention = alice
        .send_event(
            &room,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "hey bob",
                    "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await;
    let last = alice.send_text(&room, "bye").await;
    // Bob's own messages never notify him, only Alice.
    let hi = bob.send_text(&room, "hi").await;

    let page = notifications(&bob, "").await;
    assert_eq!(
        listed(&page),
        [last.clone(), mention.clone(), first.clone()]
    );
    assert!(page.get("next_token").is_none(), "{page}");
    let n = &page["notifications"][1];
    assert_eq!(n["room_id"], room);
    assert_eq!(n["read"], false);
    assert!(n["ts"].as_i64().is_some_and(|ts| ts > 0), "{n}");
    assert_eq!(n["event"]["content"]["body"], "hey bob");
    assert_eq!(n["event"]["sender"], alice.user_id);
    let actions = n["actions"].as_array().expect("actions");
    assert!(actions.contains(&json!("notify")), "{n}");
    assert!(
        actions.contains(&json!({ "set_tweak": "highlight" })),
        "{n}"
    );
    assert_eq!(listed(&notifications(&alice, "").await), [hi]);

    // Only highlights.
    assert_eq!(
        listed(&notifications(&bob, "?only=highlight").await),
        std::slice::from_ref(&mention)
    );

    // Pages of one, following next_token.
    let mut seen = Vec::new();
    let mut query = "?limit=1".to_owned();
    for _ in 0..5 {
        let page = notifications(&bob, &query).await;
        seen.extend(listed(&page));
        match page["next_token"].as_str() {
            Some(t) => query = format!("?limit=1&from={}", enc(t)),
            None => break,
        }
    }
    assert_eq!(seen, [last.clone(), mention.clone(), first.clone()]);

    // A receipt on the mention marks it and the older one read.
    bob.post_ok(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&mention)),
        json!({}),
    )
    .await;
    let page = notifications(&bob, "").await;
    let read: Vec<bool> = page["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| n["read"].as_bool().expect("read"))
        .collect();
    assert_eq!(read, [false, true, true]);

    // Bad tokens are Matrix errors.
    assert_error(
        &bob.get("/notifications?from=nope").await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &bob.get("/notifications?limit=-1").await,
        400,
        "M_INVALID_PARAM",
    );

    // Leaving the room forgets its notifications.
    bob.leave(&room).await;
    assert!(listed(&notifications(&bob, "").await).is_empty());
}

#[tokio::test]
async fn settings_screens_get_empty_third_party_lists() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    assert_eq!(alice.get_ok("/thirdparty/protocols").await, json!({}));
    assert_eq!(
        alice.get_ok("/account/3pid").await,
        json!({ "threepids": [] })
    );
    let (status, _) = node
        .request(Method::GET, "/_matrix/client/v3/account/3pid", None, None)
        .await;
    assert_eq!(status.as_u16(), 401);
}
