//! Push rules (`/pushrules`) and the unread notification counts they drive in `/sync`.
//!
//! The rule set: the server defaults for everyone, creating/replacing/deleting user rules with
//! `before`/`after`, the server-default rules protected (only `enabled` and `actions` change),
//! bad input answered with Matrix errors, and every change reaching `/sync` as `m.push_rules`
//! account data. The counts: plain messages notify, mentions through `m.mentions` (of the user,
//! or of the room by someone allowed to) highlight while a display name alone no longer does,
//! a room rule with no actions mutes, own events never count, receipts (unthreaded, threaded,
//! `main`) reset them, threads are counted apart when the filter (inline or stored, as
//! matrix-js-sdk uploads it) asks, leaving drops them, and they survive a restart and come in
//! over federation.

use std::time::{Duration, Instant};

use neurite_tests::{TestNode, User, WAIT, assert_error, enc, next_batch};
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `(notification_count, highlight_count)` of a joined room in a sync response.
fn counts(sync: &Value, room: &str) -> (u64, u64) {
    let c = &sync["rooms"]["join"][room]["unread_notifications"];
    (
        c["notification_count"]
            .as_u64()
            .expect("notification_count"),
        c["highlight_count"].as_u64().expect("highlight_count"),
    )
}

/// The counts of one thread in a sync response, `None` when the thread is not listed.
fn thread_counts(sync: &Value, room: &str, root: &str) -> Option<(u64, u64)> {
    let c = &sync["rooms"]["join"][room]["unread_thread_notifications"][root];
    Some((
        c["notification_count"].as_u64()?,
        c["highlight_count"].as_u64()?,
    ))
}

/// The rule ids of one kind, in order.
fn rule_ids(rules: &Value, kind: &str) -> Vec<String> {
    rules[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind} rules in {rules}"))
        .iter()
        .map(|r| r["rule_id"].as_str().expect("rule_id").to_owned())
        .collect()
}

/// The user rules (not starting with a dot) of one kind, in order.
fn user_rule_ids(rules: &Value, kind: &str) -> Vec<String> {
    rule_ids(rules, kind)
        .into_iter()
        .filter(|id| !id.starts_with('.'))
        .collect()
}

fn rule_path(kind: &str, rule: &str) -> String {
    format!("/pushrules/global/{kind}/{}", enc(rule))
}

async fn delete(user: &User, path: &str) -> (reqwest::StatusCode, Value) {
    user.call(Method::DELETE, path, None).await
}

/// The `m.push_rules` content in a sync's global account data, if there.
fn push_rules_in(sync: &Value) -> Option<&Value> {
    sync["account_data"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .map(|e| &e["content"])
}

/// Alice creates a room and Bob (display name "Bobby") joins it. Returns the room id.
async fn chat(alice: &User, bob: &User, extra_members: &[&User]) -> String {
    bob.put_ok(
        &format!("/profile/{}/displayname", enc(&bob.user_id)),
        json!({ "displayname": "Bobby" }),
    )
    .await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    for u in std::iter::once(bob).chain(extra_members.iter().copied()) {
        alice.invite(&room, &u.user_id).await;
        u.join(&room).await;
    }
    room
}

/// Bob syncs (from `since`) until the room's counts equal `want`; returns that response.
async fn until_counts(bob: &User, since: Option<&str>, room: &str, want: (u64, u64)) -> Value {
    bob.sync_until(since, |s| {
        s["rooms"]["join"][room].is_object() && counts(s, room) == want
    })
    .await
}

async fn receipt(user: &User, room: &str, event: &str, body: Value) {
    user.post_ok(
        &format!("/rooms/{}/receipt/m.read/{}", enc(room), enc(event)),
        body,
    )
    .await;
}

/// A text message that mentions `user` through `m.mentions`.
fn mention(user: &User, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.mentions": { "user_ids": [user.user_id] },
    })
}

const THREADS: &str = r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#;

fn thread_reply(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root },
    })
}

// ---------------------------------------------------------------------------------------------
// The rule set
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn everyone_starts_with_the_server_defaults() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;

    let all = alice.get_ok("/pushrules/").await;
    let global = &all["global"];
    assert_eq!(rule_ids(global, "override")[0], ".m.rule.master");
    assert!(rule_ids(global, "underride").contains(&".m.rule.message".to_owned()));
    for kind in ["content", "room", "sender"] {
        assert!(
            global[kind].is_array(),
            "{kind} listed even when empty: {global}"
        );
    }
    assert_eq!(&alice.get_ok("/pushrules/global/").await, global);

    let master = alice.get_ok(&rule_path("override", ".m.rule.master")).await;
    assert_eq!(master["default"], true);
    assert_eq!(master["enabled"], false);

    // Clients also find them in the initial sync and as account data.
    let sync = alice.sync(None, 0).await;
    assert_eq!(push_rules_in(&sync), Some(&all), "initial sync: {sync}");
    let data = alice
        .get_ok(&format!(
            "/user/{}/account_data/m.push_rules",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(data, all);
}

#[tokio::test]
async fn user_rules_are_created_ordered_replaced_and_deleted() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let body = |word: &str| {
        json!({
            "actions": ["notify"],
            "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": word }],
        })
    };

    alice
        .put_ok(&rule_path("override", "one"), body("one"))
        .await;
    alice
        .put_ok(
            &format!("{}?after=one", rule_path("override", "three")),
            body("three"),
        )
        .await;
    alice
        .put_ok(
            &format!("{}?before=three", rule_path("override", "two")),
            body("two"),
        )
        .await;
    alice
        .put_ok(
            &format!("{}?before=one", rule_path("override", "zero")),
            body("zero"),
        )
        .await;
    let rules = alice.get_ok("/pushrules/global/").await;
    assert_eq!(
        user_rule_ids(&rules, "override"),
        ["zero", "one", "two", "three"]
    );
    // User override rules rank below the master rule and above the other defaults.
    let ids = rule_ids(&rules, "override");
    assert_eq!(ids[0], ".m.rule.master");
    assert_eq!(ids[1], "zero");

    let two = alice.get_ok(&rule_path("override", "two")).await;
    assert_eq!(two["rule_id"], "two");
    assert_eq!(two["default"], false);
    assert_eq!(two["enabled"], true);
    assert_eq!(two["actions"], json!(["notify"]));
    assert_eq!(two["conditions"][0]["pattern"], "two");

    // Replacing keeps the place and takes the new actions.
    alice
        .put_ok(
            &rule_path("override", "two"),
            json!({ "actions": [], "conditions": [] }),
        )
        .await;
    let rules = alice.get_ok("/pushrules/global/").await;
    assert_eq!(
        user_rule_ids(&rules, "override"),
        ["zero", "one", "two", "three"]
    );
    assert_eq!(
        alice
            .get_ok(&format!("{}/actions", rule_path("override", "two")))
            .await,
        json!({ "actions": [] })
    );

    // Other kinds: content rules need a pattern, room and sender rules are named by their id.
    alice
        .put_ok(
            &rule_path("content", "cake"),
            json!({ "actions": ["notify", { "set_tweak": "highlight" }], "pattern": "cake" }),
        )
        .await;
    let room_id = alice.create_room(json!({})).await;
    alice
        .put_ok(&rule_path("room", &room_id), json!({ "actions": [] }))
        .await;
    alice
        .put_ok(
            &rule_path("sender", "@carol:example.org"),
            json!({ "actions": ["notify"] }),
        )
        .await;
    let rules = alice.get_ok("/pushrules/global/").await;
    assert_eq!(user_rule_ids(&rules, "content"), ["cake"]);
    assert_eq!(rule_ids(&rules, "room"), [room_id.as_str()]);
    assert_eq!(rule_ids(&rules, "sender"), ["@carol:example.org"]);

    let (status, body) = delete(&alice, &rule_path("override", "two")).await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &alice.get(&rule_path("override", "two")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &delete(&alice, &rule_path("override", "two")).await,
        404,
        "M_NOT_FOUND",
    );
    let (status, _) = delete(&alice, &rule_path("room", &room_id)).await;
    assert_eq!(status, 200);
    let rules = alice.get_ok("/pushrules/").await;
    assert_eq!(
        user_rule_ids(&rules["global"], "override"),
        ["zero", "one", "three"]
    );
    assert!(rule_ids(&rules["global"], "room").is_empty());
}

#[tokio::test]
async fn server_default_rules_can_only_be_switched_and_retuned() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let master = rule_path("override", ".m.rule.master");

    assert_error(&delete(&alice, &master).await, 400, "M_INVALID_PARAM");
    assert_error(
        &alice
            .put(&master, json!({ "actions": [], "conditions": [] }))
            .await,
        400,
        "M_INVALID_PARAM",
    );

    alice
        .put_ok(&format!("{master}/enabled"), json!({ "enabled": true }))
        .await;
    assert_eq!(
        alice.get_ok(&format!("{master}/enabled")).await,
        json!({ "enabled": true })
    );

    let message = rule_path("underride", ".m.rule.message");
    alice
        .put_ok(
            &format!("{message}/actions"),
            json!({ "actions": ["notify", { "set_tweak": "sound", "value": "ding" }] }),
        )
        .await;
    let actions = alice.get_ok(&format!("{message}/actions")).await;
    assert_eq!(actions["actions"][1]["value"], "ding", "{actions}");
    let rule = alice.get_ok(&message).await;
    assert_eq!(rule["default"], true, "still a default rule: {rule}");
    assert_eq!(rule["actions"], actions["actions"]);
}

#[tokio::test]
async fn bad_requests_get_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let ok = json!({ "actions": ["notify"] });
    alice
        .put_ok(&rule_path("override", "mine"), ok.clone())
        .await;

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        // Unknown scope and kind.
        (
            "/pushrules/device/override/x",
            ok.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/pushrules/global/sideways/x",
            ok.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        // Reserved and malformed rule ids.
        (
            "/pushrules/global/override/.mine",
            ok.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/pushrules/global/room/not-a-room",
            ok.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/pushrules/global/sender/nobody",
            ok.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        // Placement relative to unknown or default rules.
        (
            "/pushrules/global/override/x?before=nope",
            ok.clone(),
            404,
            "M_NOT_FOUND",
        ),
        (
            "/pushrules/global/override/x?after=nope",
            ok.clone(),
            404,
            "M_NOT_FOUND",
        ),
        (
            "/pushrules/global/override/x?after=.m.rule.master",
            ok.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        // Bodies of the wrong shape.
        ("/pushrules/global/override/x", json!({}), 400, "M_BAD_JSON"),
        (
            "/pushrules/global/override/x",
            json!({ "actions": "notify" }),
            400,
            "M_BAD_JSON",
        ),
        (
            "/pushrules/global/override/x",
            json!({ "actions": ["shout"] }),
            400,
            "M_BAD_JSON",
        ),
        (
            "/pushrules/global/override/x",
            json!({ "actions": [42] }),
            400,
            "M_BAD_JSON",
        ),
        (
            "/pushrules/global/override/x",
            json!({ "actions": [], "conditions": "always" }),
            400,
            "M_BAD_JSON",
        ),
        (
            "/pushrules/global/content/x",
            json!({ "actions": [] }),
            400,
            "M_BAD_JSON",
        ),
        (
            "/pushrules/global/override/mine/enabled",
            json!({}),
            400,
            "M_BAD_JSON",
        ),
        (
            "/pushrules/global/override/mine/enabled",
            json!({ "enabled": "yes" }),
            400,
            "M_BAD_JSON",
        ),
        (
            "/pushrules/global/override/mine/actions",
            json!({}),
            400,
            "M_BAD_JSON",
        ),
        // Unknown rules.
        (
            "/pushrules/global/override/nope/enabled",
            json!({ "enabled": false }),
            404,
            "M_NOT_FOUND",
        ),
        (
            "/pushrules/global/override/nope/actions",
            json!({ "actions": [] }),
            404,
            "M_NOT_FOUND",
        ),
    ];
    for (path, body, status, errcode) in cases {
        let resp = alice.put(path, body.clone()).await;
        assert!(
            resp.0 == status && resp.1["errcode"] == errcode,
            "PUT {path} {body}: expected {status} {errcode}, got {} {}",
            resp.0,
            resp.1
        );
    }
    for path in [
        "/pushrules/global/override/nope",
        "/pushrules/global/override/nope/enabled",
        "/pushrules/global/override/nope/actions",
        "/pushrules/global/underride/.m.rule.master",
    ] {
        assert_error(&alice.get(path).await, 404, "M_NOT_FOUND");
    }
    assert_error(
        &alice.put("/pushrules/global/override/x", json!([1])).await,
        400,
        "M_BAD_JSON",
    );
    // Push rules are not writable through account data.
    assert_error(
        &alice
            .put(
                &format!("/user/{}/account_data/m.push_rules", enc(&alice.user_id)),
                json!({ "global": {} }),
            )
            .await,
        405,
        "M_BAD_JSON",
    );
    // Nothing above changed the rule set.
    let rules = alice.get_ok("/pushrules/global/").await;
    assert_eq!(user_rule_ids(&rules, "override"), ["mine"]);
    // Without a token, nothing at all.
    let (status, _) = node
        .request(Method::GET, "/_matrix/client/v3/pushrules/", None, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_rule_change_wakes_a_waiting_sync() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let since = next_batch(&alice.sync(None, 0).await);

    let listening = node.listeners();
    let waiting = {
        let alice = alice.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = alice.sync(Some(&since), 30_000).await;
            (resp, started.elapsed())
        })
    };
    // Once the sync waits for changes, the change below must wake it.
    node.until_listening(listening).await;
    alice
        .put_ok(
            &rule_path("content", "lunch"),
            json!({ "actions": ["notify"], "pattern": "lunch" }),
        )
        .await;
    let (resp, took) = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("sync returned")
        .expect("sync task");
    assert!(
        took < Duration::from_secs(20),
        "woken, not timed out: {took:?}"
    );
    let rules = push_rules_in(&resp).unwrap_or_else(|| panic!("m.push_rules in {resp}"));
    assert_eq!(user_rule_ids(&rules["global"], "content"), ["lunch"]);
    assert_eq!(rules, &alice.get_ok("/pushrules/").await);
}

// ---------------------------------------------------------------------------------------------
// Unread counts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_notify_and_mentions_highlight() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = chat(&alice, &bob, &[]).await;

    alice.send_text(&room, "hello").await;
    let s = until_counts(&bob, None, &room, (1, 0)).await;

    // Mentioned by user id, then the whole room (Alice, the creator, may ping @room).
    alice
        .send_event(&room, "m.room.message", mention(&bob, "ping"))
        .await;
    let s = until_counts(&bob, Some(&next_batch(&s)), &room, (2, 1)).await;
    alice
        .send_event(
            &room,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "all hands", "m.mentions": { "room": true } }),
        )
        .await;
    let s = until_counts(&bob, Some(&next_batch(&s)), &room, (3, 2)).await;
    // A display name in the body alone is no mention (the legacy rules left the spec with
    // MSC4210): it counts as a plain message.
    alice.send_text(&room, "are you there, Bobby?").await;
    let s = until_counts(&bob, Some(&next_batch(&s)), &room, (4, 2)).await;

    // The sender's own events never count for them.
    let mine = alice.sync(None, 0).await;
    assert_eq!(counts(&mine, &room), (0, 0));

    // A read receipt on the latest event resets the counts, and the next incremental sync
    // carries the room to say so.
    let last = bob.send_text(&room, "reading now").await;
    let since = next_batch(&bob.sync(Some(&next_batch(&s)), 0).await);
    receipt(&bob, &room, &last, json!({})).await;
    let s = bob.sync(Some(&since), 10_000).await;
    assert_eq!(counts(&s, &room), (0, 0), "{s}");

    // Bob's own message did not count; Alice's next one does.
    alice.send_text(&room, "welcome back").await;
    until_counts(&bob, Some(&next_batch(&s)), &room, (1, 0)).await;
}

#[tokio::test]
async fn a_private_receipt_on_an_older_event_clears_only_up_to_it() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = chat(&alice, &bob, &[]).await;
    let first = alice.send_text(&room, "one").await;
    alice.send_text(&room, "two").await;
    alice.send_text(&room, "three").await;
    let s = until_counts(&bob, None, &room, (3, 0)).await;
    bob.post_ok(
        &format!(
            "/rooms/{}/receipt/m.read.private/{}",
            enc(&room),
            enc(&first)
        ),
        json!({}),
    )
    .await;
    until_counts(&bob, Some(&next_batch(&s)), &room, (2, 0)).await;
}

#[tokio::test]
async fn a_room_rule_without_actions_mutes_the_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    let muted = chat(&alice, &bob, &[&carol]).await;
    let legacy = chat(&alice, &bob, &[&carol]).await;
    let loud = chat(&alice, &bob, &[&carol]).await;

    bob.put_ok(&rule_path("room", &muted), json!({ "actions": [] }))
        .await;
    bob.put_ok(
        &rule_path("room", &legacy),
        json!({ "actions": ["dont_notify"] }),
    )
    .await;
    for room in [&muted, &legacy, &loud] {
        alice.send_text(room, "news for everyone").await;
    }
    // Once the last room counts, the earlier ones were evaluated too.
    let s = bob
        .sync_until(None, |s| {
            s["rooms"]["join"][&loud].is_object() && counts(s, &loud) == (1, 0)
        })
        .await;
    assert_eq!(counts(&s, &muted), (0, 0));
    assert_eq!(counts(&s, &legacy), (0, 0));
    // Carol has no such rule: in a group room a plain message notifies her.
    let c = carol
        .sync_until(None, |s| {
            s["rooms"]["join"][&muted].is_object() && counts(s, &muted) == (1, 0)
        })
        .await;
    assert_eq!(counts(&c, &legacy), (1, 0));
}

#[tokio::test]
async fn threads_are_counted_apart_when_the_filter_asks() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = chat(&alice, &bob, &[]).await;
    let threads: Value = serde_json::from_str(THREADS).expect("filter");

    let root = alice.send_text(&room, "thread root").await;
    alice
        .send_event(
            &room,
            "m.room.message",
            thread_reply(&root, "in the thread"),
        )
        .await;
    let mut look = mention(&bob, "look");
    look["m.relates_to"] = json!({ "rel_type": "m.thread", "event_id": root });
    let reply = alice.send_event(&room, "m.room.message", look).await;
    let main = alice.send_text(&room, "back in the room").await;

    // Without the filter flag the room counts everything.
    until_counts(&bob, None, &room, (4, 1)).await;
    // With it, the main timeline (root included) apart from the thread.
    let s = bob
        .sync_filtered_until(&threads, None, |s| {
            s["rooms"]["join"][&room].is_object() && counts(s, &room) == (2, 0)
        })
        .await;
    assert_eq!(thread_counts(&s, &room, &root), Some((2, 1)), "{s}");

    // A threaded receipt resets only its thread.
    receipt(&bob, &room, &reply, json!({ "thread_id": root })).await;
    let s = bob
        .sync_filtered_until(&threads, Some(&next_batch(&s)), |s| {
            s["rooms"]["join"][&room].is_object() && thread_counts(s, &room, &root).is_none()
        })
        .await;
    assert_eq!(counts(&s, &room), (2, 0), "{s}");

    // `main` resets the main timeline only.
    alice
        .send_event(&room, "m.room.message", thread_reply(&root, "more"))
        .await;
    let s = bob
        .sync_filtered_until(&threads, Some(&next_batch(&s)), |s| {
            thread_counts(s, &room, &root) == Some((1, 0))
        })
        .await;
    receipt(&bob, &room, &main, json!({ "thread_id": "main" })).await;
    let s = bob
        .sync_filtered_until(&threads, Some(&next_batch(&s)), |s| {
            s["rooms"]["join"][&room].is_object() && counts(s, &room) == (0, 0)
        })
        .await;
    assert_eq!(thread_counts(&s, &room, &root), Some((1, 0)), "{s}");

    // An unthreaded receipt on the latest event resets everything.
    let latest = alice.send_text(&room, "last word").await;
    let s = bob
        .sync_filtered_until(&threads, Some(&next_batch(&s)), |s| {
            s["rooms"]["join"][&room].is_object() && counts(s, &room) == (1, 0)
        })
        .await;
    receipt(&bob, &room, &latest, json!({})).await;
    let s = bob
        .sync_filtered_until(&threads, Some(&next_batch(&s)), |s| {
            s["rooms"]["join"][&room].is_object() && counts(s, &room) == (0, 0)
        })
        .await;
    assert_eq!(thread_counts(&s, &room, &root), None, "{s}");

    // Bad thread ids are refused.
    let resp = bob
        .post(
            &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&latest)),
            json!({ "thread_id": "sideways" }),
        )
        .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_stored_filter_asks_for_thread_counts_as_matrix_js_sdk_does() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = chat(&alice, &bob, &[]).await;
    // matrix-js-sdk uploads its sync filter once and syncs with the filter id.
    let filter = bob
        .post_ok(
            &format!("/user/{}/filter", enc(&bob.user_id)),
            json!({ "room": { "timeline": { "limit": 20, "unread_thread_notifications": true } } }),
        )
        .await;
    let filter_id = filter["filter_id"].as_str().expect("filter_id").to_owned();
    let root = alice.send_text(&room, "root").await;
    alice
        .send_event(&room, "m.room.message", thread_reply(&root, "reply"))
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let s = bob
            .get_ok(&format!("/sync?filter={filter_id}&timeout=1000"))
            .await;
        if s["rooms"]["join"][&room].is_object() && thread_counts(&s, &room, &root).is_some() {
            assert_eq!(counts(&s, &room), (1, 0), "{s}");
            assert_eq!(thread_counts(&s, &room, &root), Some((1, 0)), "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "no thread counts: {s}");
    }
}

#[tokio::test]
async fn leaving_drops_the_counts_of_the_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = chat(&alice, &bob, &[]).await;
    alice.send_text(&room, "unread").await;
    until_counts(&bob, None, &room, (1, 0)).await;

    bob.leave(&room).await;
    alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;
    let s = bob.sync(None, 0).await;
    assert_eq!(counts(&s, &room), (0, 0), "{s}");
}

#[tokio::test]
async fn counts_survive_a_restart() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = chat(&alice, &bob, &[]).await;
    alice
        .send_event(&room, "m.room.message", mention(&bob, "hello"))
        .await;
    alice.send_text(&room, "are you there").await;
    until_counts(&bob, None, &room, (2, 1)).await;

    let dir = node.stop().await;
    let node = TestNode::start_in(dir, |_| {}).await;
    let bob = node.login("bob", "correct horse").await;
    let s = bob.sync(None, 0).await;
    assert_eq!(counts(&s, &room), (2, 1), "{s}");
}

#[tokio::test]
async fn events_from_another_node_count() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    bob.join(&room).await;
    // Alice's node knows Bob joined once his member event reaches it.
    alice
        .sync_until(None, |s| {
            neurite_tests::timeline(s, &room)
                .iter()
                .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        })
        .await;

    alice.send_text(&room, "over the air").await;
    alice
        .send_event(&room, "m.room.message", mention(&bob, "hello"))
        .await;
    until_counts(&bob, None, &room, (2, 1)).await;
}
