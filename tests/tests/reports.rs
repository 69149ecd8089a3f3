//! Reporting events (`POST /rooms/{roomId}/report/{eventId}`) and rooms
//! (`POST /rooms/{roomId}/report`).

use neurite_tests::{TestNode, assert_error, enc};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_visible_event_can_be_reported_and_is_stored() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let event = alice.send_text(&room, "rude words").await;
    let resp = bob
        .post_ok(
            &format!("/rooms/{}/report/{}", enc(&room), enc(&event)),
            json!({ "score": -100, "reason": "rude" }),
        )
        .await;
    assert_eq!(resp, json!({}));
    // Both fields are optional.
    bob.post_ok(
        &format!("/rooms/{}/report/{}", enc(&room), enc(&event)),
        json!({}),
    )
    .await;
    let rooms = node.node().services().rooms.clone();
    assert_eq!(rooms.report_count(&room).await.expect("count"), 2);
}

#[tokio::test]
async fn unknown_or_invisible_events_are_not_found() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let eve = node.register("eve").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let event = alice.send_text(&room, "private").await;
    // Eve is not in the room.
    assert_error(
        &eve.post(
            &format!("/rooms/{}/report/{}", enc(&room), enc(&event)),
            json!({ "reason": "x" }),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    // An event id that does not exist, and one from another room.
    assert_error(
        &alice
            .post(
                &format!("/rooms/{}/report/{}", enc(&room), enc("$nope")),
                json!({}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    let other = alice.create_room(json!({})).await;
    assert_error(
        &alice
            .post(
                &format!("/rooms/{}/report/{}", enc(&other), enc(&event)),
                json!({}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    let rooms = node.node().services().rooms.clone();
    assert_eq!(rooms.report_count(&room).await.expect("count"), 0);
}

#[tokio::test]
async fn rooms_can_be_reported() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.post_ok(
        &format!("/rooms/{}/report", enc(&room)),
        json!({ "reason": "spam room" }),
    )
    .await;
    let rooms = node.node().services().rooms.clone();
    assert_eq!(rooms.report_count(&room).await.expect("count"), 1);
    let unknown = format!("!nothere:{}", node.server_name());
    assert_error(
        &bob.post(&format!("/rooms/{}/report", enc(&unknown)), json!({}))
            .await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn bad_reports_get_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let event = alice.send_text(&room, "hello").await;
    let path = format!("/rooms/{}/report/{}", enc(&room), enc(&event));
    assert_error(
        &alice.post(&path, json!({ "score": 5 })).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.post(&path, json!({ "score": "bad" })).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.post(&path, json!({ "reason": 7 })).await,
        400,
        "M_BAD_JSON",
    );
    let (s, body) = node
        .request(
            Method::POST,
            &format!("/_matrix/client/v3{path}"),
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&(s, body), 401, "M_MISSING_TOKEN");
}
