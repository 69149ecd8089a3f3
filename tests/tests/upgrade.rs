//! Room upgrades: `POST /rooms/{roomId}/upgrade`.

use neurite_tests::{TestNode, assert_error, enc};
use serde_json::json;

#[tokio::test]
async fn upgrade_copies_state_moves_the_alias_and_tombstones_the_old_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let old = alice
        .create_room(json!({
            "preset": "public_chat",
            "room_version": "11",
            "name": "Book club",
            "topic": "Novels",
            "room_alias_name": "books",
            "initial_state": [{ "type": "m.room.encryption", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
            "power_level_content_override": { "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 50 } },
        }))
        .await;
    bob.join(&old).await;

    let resp = alice
        .post_ok(
            &format!("/rooms/{}/upgrade", enc(&old)),
            json!({ "new_version": "12" }),
        )
        .await;
    let new = resp["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned();
    assert_ne!(new, old);

    let create = alice.state_content(&new, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(
        alice.state_content(&new, "m.room.name", "").await["name"],
        "Book club"
    );
    assert_eq!(
        alice.state_content(&new, "m.room.topic", "").await["topic"],
        "Novels"
    );
    assert_eq!(
        alice.state_content(&new, "m.room.join_rules", "").await["join_rule"],
        "public"
    );
    assert_eq!(
        alice.state_content(&new, "m.room.encryption", "").await["algorithm"],
        "m.megolm.v1.aes-sha2"
    );
    let levels = alice.state_content(&new, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][&bob.user_id], 50);
    // Version 12 ranks the creator above everyone; they are not listed.
    assert!(levels["users"].get(&alice.user_id).is_none(), "{levels}");

    let alias = format!("#books:{}", node.server_name());
    let resolved = alice
        .get_ok(&format!("/directory/room/{}", enc(&alias)))
        .await;
    assert_eq!(resolved["room_id"], new.as_str());
    assert_eq!(
        alice
            .state_content(&new, "m.room.canonical_alias", "")
            .await["alias"],
        alias.as_str()
    );

    let tombstone = alice.state_content(&old, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new.as_str());
    assert!(tombstone["body"].is_string());
    let old_levels = alice.state_content(&old, "m.room.power_levels", "").await;
    assert_eq!(old_levels["events_default"], 50);
    assert_eq!(old_levels["invite"], 50);
    assert!(
        alice
            .state_content(&old, "m.room.canonical_alias", "")
            .await
            .get("alias")
            .is_none()
    );
    // Bob (50) still may speak in the old room; someone at the default may not.
    let carol = node.register("carol").await;
    carol.join(&old).await;
    assert_error(
        &carol
            .put(
                &format!("/rooms/{}/send/m.room.message/t1", enc(&old)),
                json!({ "msgtype": "m.text", "body": "hi" }),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Bob can join the new room and talk there.
    bob.join(&new).await;
    bob.send_text(&new, "hello in the new room").await;
}

#[tokio::test]
async fn upgrade_to_an_older_version_keeps_the_upgrader_in_power() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let old = alice
        .create_room(json!({ "name": "Plain", "room_version": "12" }))
        .await;
    let resp = alice
        .post_ok(
            &format!("/rooms/{}/upgrade", enc(&old)),
            json!({ "new_version": "10" }),
        )
        .await;
    let new = resp["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned();
    let levels = alice.state_content(&new, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][&alice.user_id], 100);
    assert_eq!(
        alice.state_content(&new, "m.room.name", "").await["name"],
        "Plain"
    );
    assert_eq!(
        alice.state_content(&new, "m.room.join_rules", "").await["join_rule"],
        "invite"
    );
}

#[tokio::test]
async fn upgrading_needs_power_and_membership() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let eve = node.register("eve").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let path = format!("/rooms/{}/upgrade", enc(&room));
    assert_error(
        &bob.post(&path, json!({ "new_version": "11" })).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &eve.post(&path, json!({ "new_version": "11" })).await,
        403,
        "M_FORBIDDEN",
    );
    // Nothing happened to the room.
    let (s, _) = alice
        .get(&format!("/rooms/{}/state/m.room.tombstone/", enc(&room)))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn bad_upgrade_requests_get_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = format!("/rooms/{}/upgrade", enc(&room));
    assert_error(
        &alice.post(&path, json!({ "new_version": "99" })).await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    assert_error(&alice.post(&path, json!({})).await, 400, "M_BAD_JSON");
    assert_error(
        &alice.post(&path, json!({ "new_version": 11 })).await,
        400,
        "M_BAD_JSON",
    );
    let unknown = format!("!nothere:{}", node.server_name());
    assert_error(
        &alice
            .post(
                &format!("/rooms/{}/upgrade", enc(&unknown)),
                json!({ "new_version": "11" }),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
}
