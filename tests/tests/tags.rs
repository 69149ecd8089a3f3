//! Room tags (`/user/{userId}/rooms/{roomId}/tags`), kept as the room's `m.tag` account data.

use neurite_tests::{TestNode, assert_error, enc, next_batch};
use reqwest::Method;
use serde_json::{Value, json};

fn tags_path(user: &str, room: &str) -> String {
    format!("/user/{}/rooms/{}/tags", enc(user), enc(room))
}

fn room_tag_event(sync: &Value, room: &str) -> Option<Value> {
    sync["rooms"]["join"][room]["account_data"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.tag")
        .cloned()
}

#[tokio::test]
async fn tags_can_be_added_listed_and_removed() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = tags_path(&alice.user_id, &room);

    assert_eq!(alice.get_ok(&path).await, json!({ "tags": {} }));
    alice
        .put_ok(&format!("{path}/m.favourite"), json!({ "order": 0.25 }))
        .await;
    alice.put_ok(&format!("{path}/u.work"), json!({})).await;
    assert_eq!(
        alice.get_ok(&path).await,
        json!({ "tags": { "m.favourite": { "order": 0.25 }, "u.work": {} } })
    );
    // Replacing a tag replaces its order.
    alice
        .put_ok(&format!("{path}/m.favourite"), json!({ "order": 1 }))
        .await;
    let (s, _) = alice
        .call(Method::DELETE, &format!("{path}/u.work"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        alice.get_ok(&path).await,
        json!({ "tags": { "m.favourite": { "order": 1 } } })
    );
    // Deleting a tag that is not there is fine.
    let (s, _) = alice
        .call(Method::DELETE, &format!("{path}/u.missing"), None)
        .await;
    assert_eq!(s, 200);
    // The same data is the room's m.tag account data.
    let data = alice
        .get_ok(&format!(
            "/user/{}/rooms/{}/account_data/m.tag",
            enc(&alice.user_id),
            enc(&room)
        ))
        .await;
    assert_eq!(data, json!({ "tags": { "m.favourite": { "order": 1 } } }));
}

#[tokio::test]
async fn a_tag_change_wakes_sync_and_shows_in_room_account_data() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let first = alice.sync(None, 0).await;
    let since = next_batch(&first);

    let waiter = {
        let alice = alice.clone();
        let since = since.clone();
        tokio::spawn(async move { alice.sync(Some(&since), 10_000).await })
    };
    tokio::task::yield_now().await;
    alice
        .put_ok(
            &format!("{}/m.lowpriority", tags_path(&alice.user_id, &room)),
            json!({ "order": 0.5 }),
        )
        .await;
    // Whether the long poll started before or after the change, it answers with the tag
    // (a missed wake-up would make it time out empty).
    let synced = waiter.await.expect("sync task");
    let event = room_tag_event(&synced, &room).expect("m.tag in sync");
    assert_eq!(
        event["content"],
        json!({ "tags": { "m.lowpriority": { "order": 0.5 } } })
    );
}

#[tokio::test]
async fn tags_of_someone_else_are_forbidden() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({})).await;
    let path = tags_path(&alice.user_id, &room);
    assert_error(&bob.get(&path).await, 403, "M_FORBIDDEN");
    assert_error(
        &bob.put(&format!("{path}/u.x"), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.call(Method::DELETE, &format!("{path}/u.x"), None).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn bad_tag_requests_get_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = tags_path(&alice.user_id, &room);
    assert_error(
        &alice
            .put(&format!("{path}/u.x"), json!({ "order": "first" }))
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.get(&tags_path(&alice.user_id, "not-a-room")).await,
        400,
        "M_INVALID_PARAM",
    );
    let long = "x".repeat(300);
    assert_error(
        &alice.put(&format!("{path}/{long}"), json!({})).await,
        400,
        "M_INVALID_PARAM",
    );
    let (s, _) = node
        .request(
            Method::GET,
            &format!("/_matrix/client/v3{path}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401);
}
