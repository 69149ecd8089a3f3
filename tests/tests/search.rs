//! Server-side search: `POST /search` with the `room_events` category.

use neurite_tests::{TestNode, User, assert_error, enc};
use serde_json::{Value, json};

async fn search(user: &User, criteria: Value) -> Value {
    let resp = user
        .post_ok(
            "/search",
            json!({ "search_categories": { "room_events": criteria } }),
        )
        .await;
    resp["search_categories"]["room_events"].clone()
}

fn result_ids(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            r["result"]["event_id"]
                .as_str()
                .expect("event_id")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn messages_are_found_by_word_and_prefix() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let fox = alice.send_text(&room, "The quick brown fox").await;
    alice.send_text(&room, "jumps over the lazy dog").await;

    for term in ["quick", "QUICK", "qui", "brown quick"] {
        let found = search(&alice, json!({ "search_term": term })).await;
        assert_eq!(result_ids(&found), vec![fox.clone()], "term {term}");
        assert_eq!(found["count"], 1);
        assert_eq!(
            found["results"][0]["result"]["content"]["body"],
            "The quick brown fox"
        );
        assert!(found["results"][0]["rank"].is_number());
        assert!(found.get("next_batch").is_none());
    }
    let found = search(&alice, json!({ "search_term": "quick brown" })).await;
    assert_eq!(found["highlights"], json!(["quick", "brown"]));
    assert_eq!(
        search(&alice, json!({ "search_term": "cat" })).await["count"],
        0
    );
}

#[tokio::test]
async fn only_rooms_and_history_the_user_can_see_are_searched() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let eve = node.register("eve").await;
    let secret = eve.create_room(json!({ "preset": "private_chat" })).await;
    eve.send_text(&secret, "pineapple secret").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let before_leave = alice.send_text(&room, "pineapple party").await;
    bob.leave(&room).await;
    alice.send_text(&room, "pineapple after bob left").await;

    assert_eq!(
        result_ids(&search(&bob, json!({ "search_term": "pineapple" })).await),
        vec![before_leave.clone()]
    );
    let alice_found = search(&alice, json!({ "search_term": "pineapple" })).await;
    assert_eq!(alice_found["count"], 2);
    // A redacted message leaves the index.
    let first = result_ids(&alice_found)
        .into_iter()
        .find(|id| *id != before_leave)
        .expect("a second result");
    alice.redact(&room, &first).await;
    assert_eq!(
        search(&alice, json!({ "search_term": "pineapple" })).await["count"],
        1
    );
}

#[tokio::test]
async fn recent_order_and_pagination() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(alice.send_text(&room, &format!("apple number {i}")).await);
    }
    let criteria = json!({
        "search_term": "apple", "order_by": "recent", "filter": { "limit": 2 }
    });
    let page1 = search(&alice, criteria.clone()).await;
    assert_eq!(result_ids(&page1), vec![sent[2].clone(), sent[1].clone()]);
    assert_eq!(page1["count"], 3);
    let next = page1["next_batch"].as_str().expect("next_batch");
    let page2 = alice
        .post_ok(
            &format!("/search?next_batch={}", enc(next)),
            json!({ "search_categories": { "room_events": criteria } }),
        )
        .await;
    let page2 = &page2["search_categories"]["room_events"];
    assert_eq!(result_ids(page2), vec![sent[0].clone()]);
    assert!(page2.get("next_batch").is_none());
}

#[tokio::test]
async fn keys_filter_context_state_and_groups() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let garden = alice
        .create_room(json!({ "name": "Gardening club", "topic": "tomatoes and roses" }))
        .await;
    let other = alice.create_room(json!({})).await;
    let m1 = alice.send_text(&garden, "first").await;
    let hit = alice.send_text(&garden, "roses are red").await;
    let m3 = alice.send_text(&garden, "last").await;
    alice.send_text(&other, "roses elsewhere").await;

    let by_name = search(
        &alice,
        json!({ "search_term": "gardening", "keys": ["content.name"] }),
    )
    .await;
    assert_eq!(by_name["count"], 1);
    assert_eq!(by_name["results"][0]["result"]["type"], "m.room.name");
    assert_eq!(
        search(
            &alice,
            json!({ "search_term": "gardening", "keys": ["content.body"] })
        )
        .await["count"],
        0
    );
    assert_eq!(
        search(
            &alice,
            json!({ "search_term": "tomatoes", "keys": ["content.topic"] })
        )
        .await["count"],
        1
    );

    let found = search(
        &alice,
        json!({
            "search_term": "roses",
            "keys": ["content.body"],
            "filter": { "rooms": [garden] },
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "include_state": true,
            "groupings": { "group_by": [{ "key": "room_id" }] },
        }),
    )
    .await;
    assert_eq!(result_ids(&found), vec![hit.clone()]);
    let ctx = &found["results"][0]["context"];
    assert_eq!(ctx["events_before"][0]["event_id"], m1.as_str());
    assert_eq!(ctx["events_after"][0]["event_id"], m3.as_str());
    assert_eq!(ctx["events_before"].as_array().map(Vec::len), Some(1));
    assert!(ctx["start"].is_string() && ctx["end"].is_string());
    assert!(ctx["profile_info"][&alice.user_id].is_object());
    let state = found["state"][&garden]
        .as_array()
        .expect("state of the room");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    assert_eq!(found["groups"]["room_id"][&garden]["results"], json!([hit]));
}

#[tokio::test]
async fn bad_searches_get_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    assert_error(&alice.post("/search", json!({})).await, 400, "M_BAD_JSON");
    assert_error(
        &alice
            .post(
                "/search",
                json!({ "search_categories": { "room_events": {} } }),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    for (criteria, code) in [
        (
            json!({ "search_term": "a", "keys": ["content.foo"] }),
            "M_INVALID_PARAM",
        ),
        (json!({ "search_term": "a", "keys": [] }), "M_INVALID_PARAM"),
        (
            json!({ "search_term": "a", "order_by": "best" }),
            "M_INVALID_PARAM",
        ),
        (
            json!({ "search_term": "a", "groupings": { "group_by": [{ "key": "type" }] } }),
            "M_INVALID_PARAM",
        ),
        (json!({ "search_term": 5 }), "M_BAD_JSON"),
    ] {
        assert_error(
            &alice
                .post(
                    "/search",
                    json!({ "search_categories": { "room_events": criteria } }),
                )
                .await,
            400,
            code,
        );
    }
    assert_error(
        &alice
            .post(
                "/search?next_batch=abc",
                json!({ "search_categories": { "room_events": { "search_term": "a" } } }),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // No category asked: nothing answered.
    assert_eq!(
        alice
            .post_ok("/search", json!({ "search_categories": {} }))
            .await,
        json!({ "search_categories": {} })
    );
}

/// Messages join the index in batches; whether a message is in a written batch or still
/// waiting (also across a restart), search finds it, and a redacted one is never found.
#[tokio::test]
async fn messages_waiting_for_their_batch_are_found_and_redactions_respected() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut ids = Vec::new();
    // More than one batch (64), so some are indexed as they go and the rest wait.
    for i in 0..100 {
        ids.push(alice.send_text(&room, &format!("walrus number {i}")).await);
    }
    // A waiting message redacted before any search was made.
    let redacted = ids.pop().expect("last");
    alice.redact(&room, &redacted).await;
    let dir = node.stop().await;
    let node = TestNode::start_in(dir, |_| {}).await;
    let alice = node.login("alice", "correct horse").await;
    let found = search(
        &alice,
        json!({ "search_term": "walrus", "order_by": "recent" }),
    )
    .await;
    assert_eq!(found["count"], 99, "{found}");
    let mut page = result_ids(&found);
    assert!(!page.contains(&redacted));
    // The newest ten, newest first.
    page.truncate(10);
    let newest: Vec<String> = ids.iter().rev().take(10).cloned().collect();
    assert_eq!(page, newest);
    // Waiting messages written after the search are found by the next one.
    let late = alice.send_text(&room, "late walrus").await;
    let found = search(&alice, json!({ "search_term": "late" })).await;
    assert_eq!(result_ids(&found), vec![late]);
}
