//! Presence (local users): `/presence/{userId}/status`, presence in `/sync`, and `set_presence`.

use neurite_tests::{TestNode, User, assert_error, enc, next_batch};
use serde_json::{Value, json};

fn status_path(user: &str) -> String {
    format!("/presence/{}/status", enc(user))
}

fn presence_of<'a>(sync: &'a Value, user: &str) -> Option<&'a Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["sender"] == user && e["type"] == "m.presence")
}

async fn sync_with(user: &User, since: Option<&str>, set_presence: &str) -> Value {
    let mut path = format!("/sync?timeout=0&set_presence={set_presence}");
    if let Some(s) = since {
        path.push_str(&format!("&since={}", enc(s)));
    }
    user.get_ok(&path).await
}

#[tokio::test]
async fn own_presence_can_be_set_and_read() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    // Never set: offline.
    assert_eq!(
        alice.get_ok(&status_path(&alice.user_id)).await["presence"],
        "offline"
    );
    alice
        .put_ok(
            &status_path(&alice.user_id),
            json!({ "presence": "online", "status_msg": "around" }),
        )
        .await;
    let status = alice.get_ok(&status_path(&alice.user_id)).await;
    assert_eq!(status["presence"], "online");
    assert_eq!(status["status_msg"], "around");
    assert_eq!(status["currently_active"], true);
    let ago = status["last_active_ago"].as_i64().expect("last_active_ago");
    assert!((0..60_000).contains(&ago), "{status}");

    alice
        .put_ok(
            &status_path(&alice.user_id),
            json!({ "presence": "unavailable" }),
        )
        .await;
    let status = alice.get_ok(&status_path(&alice.user_id)).await;
    assert_eq!(status["presence"], "unavailable");
    assert_eq!(status["currently_active"], false);
    assert!(status.get("status_msg").is_none(), "{status}");
}

#[tokio::test]
async fn presence_of_others_needs_a_shared_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    alice
        .put_ok(
            &status_path(&alice.user_id),
            json!({ "presence": "online" }),
        )
        .await;
    assert_error(
        &bob.put(
            &status_path(&alice.user_id),
            json!({ "presence": "offline" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.get(&status_path(&alice.user_id)).await,
        403,
        "M_FORBIDDEN",
    );
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    assert_eq!(
        bob.get_ok(&status_path(&alice.user_id)).await["presence"],
        "online"
    );
    let unknown = format!("@nobody:{}", node.server_name());
    assert_error(&bob.get(&status_path(&unknown)).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn sync_carries_presence_changes_of_room_members_once() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;

    let first = sync_with(&bob, None, "offline").await;
    let since = next_batch(&first);
    alice
        .put_ok(
            &status_path(&alice.user_id),
            json!({ "presence": "unavailable", "status_msg": "lunch" }),
        )
        .await;
    // Carol shares no room with bob: her changes stay out of his sync.
    carol
        .put_ok(
            &status_path(&carol.user_id),
            json!({ "presence": "online" }),
        )
        .await;
    let synced = bob
        .get_ok(&format!(
            "/sync?timeout=10000&set_presence=offline&since={}",
            enc(&since)
        ))
        .await;
    let event = presence_of(&synced, &alice.user_id).expect("alice's presence");
    assert_eq!(event["content"]["presence"], "unavailable");
    assert_eq!(event["content"]["status_msg"], "lunch");
    assert!(event["content"]["last_active_ago"].is_i64());
    assert!(presence_of(&synced, &carol.user_id).is_none(), "{synced}");

    // Nothing changed since: no presence event again.
    let again = sync_with(&bob, Some(&next_batch(&synced)), "offline").await;
    assert!(presence_of(&again, &alice.user_id).is_none(), "{again}");
}

#[tokio::test]
async fn sync_set_presence_updates_presence() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    // offline: syncing does not mark the user online.
    sync_with(&alice, None, "offline").await;
    assert_eq!(
        alice.get_ok(&status_path(&alice.user_id)).await["presence"],
        "offline"
    );
    // The default marks them online, and their own sync shows it.
    let synced = alice.sync(None, 0).await;
    assert_eq!(
        alice.get_ok(&status_path(&alice.user_id)).await["presence"],
        "online"
    );
    let own = presence_of(&synced, &alice.user_id).expect("own presence");
    assert_eq!(own["content"]["presence"], "online");
    assert_eq!(own["content"]["currently_active"], true);
    sync_with(&alice, Some(&next_batch(&synced)), "unavailable").await;
    assert_eq!(
        alice.get_ok(&status_path(&alice.user_id)).await["presence"],
        "unavailable"
    );
    assert_error(
        &alice.get("/sync?timeout=0&set_presence=busy").await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn bad_presence_requests_get_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let path = status_path(&alice.user_id);
    assert_error(
        &alice.put(&path, json!({ "presence": "busy" })).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&alice.put(&path, json!({})).await, 400, "M_BAD_JSON");
    assert_error(
        &alice
            .put(&path, json!({ "presence": "online", "status_msg": 5 }))
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice
            .put(
                &path,
                json!({ "presence": "online", "status_msg": "x".repeat(2000) }),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
}
