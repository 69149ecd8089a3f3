//! Room aliases across servers: resolving another server's alias through it, and joining a
//! room by an alias of the server it lives on.

use neurite_tests::{assert_error, enc};
use serde_json::json;

#[tokio::test]
async fn a_remote_alias_is_resolved_by_its_server_and_can_be_joined() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "room_alias_name": "lobby" }))
        .await;
    let alias = format!("#lobby:{}", a.server_name());

    let found = bob
        .get_ok(&format!("/directory/room/{}", enc(&alias)))
        .await;
    assert_eq!(found["room_id"], room.as_str());
    assert_eq!(found["servers"][0], a.server_name().as_str(), "{found}");

    let unknown = format!("#nothing:{}", a.server_name());
    assert_error(
        &bob.get(&format!("/directory/room/{}", enc(&unknown))).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.get(&format!("/directory/room/{}", enc("#no-server")))
            .await,
        400,
        "M_INVALID_PARAM",
    );

    let joined = bob
        .post_ok(&format!("/join/{}", enc(&alias)), json!({}))
        .await;
    assert_eq!(joined["room_id"], room.as_str());
    bob.sync_until(None, |s| s["rooms"]["join"][&room].is_object())
        .await;
    let event = bob.send_text(&room, "hello lobby").await;
    alice
        .sync_until(None, |s| neurite_tests::has_event(s, &room, &event))
        .await;
    assert_error(
        &bob.post(&format!("/join/{}", enc(&unknown)), json!({}))
            .await,
        404,
        "M_NOT_FOUND",
    );

    // The alias's server is gone: the alias cannot be resolved.
    a.stop().await;
    assert_error(
        &bob.get(&format!("/directory/room/{}", enc(&alias))).await,
        404,
        "M_NOT_FOUND",
    );
}
