//! The shortest chat: two users, one room, one message each way.

use neurite_tests::{TestNode, has_event};
use serde_json::json;

#[tokio::test]
async fn two_users_chat_in_a_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice
        .create_room(json!({ "name": "Smoke", "preset": "private_chat" }))
        .await;
    alice.invite(&room, &bob.user_id).await;
    let invited = bob
        .sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let since = invited["next_batch"].as_str().unwrap().to_owned();
    bob.join(&room).await;
    let hello = alice.send_text(&room, "hello bob").await;
    let seen = bob
        .sync_until(Some(&since), |s| has_event(s, &room, &hello))
        .await;
    assert!(has_event(&seen, &room, &hello));
    let reply = bob.send_text(&room, "hi alice").await;
    alice
        .sync_until(None, |s| has_event(s, &room, &reply))
        .await;
}
