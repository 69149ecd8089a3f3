//! Rooms: creation, state, membership, members, power levels and aliases.
//!
//! Ports of these Complement client-server scenarios (matrix-org/complement, tests/csapi),
//! rewritten against Neurite's test harness:
//!
//! - `TestRoomCreate` (apidoc_room_create_test.go). Room version "2" is replaced by "11" and
//!   "12", the versions this node creates.
//! - `TestRoomCreationReportsEventsToMyself` (rooms_state_test.go). The "joining twice" case
//!   checks right after the second join returns instead of sleeping.
//! - `TestRoomState` (apidoc_room_state_test.go).
//! - `TestRoomsInvite` (rooms_invite_test.go).
//! - `TestMembersLocal` (rooms_members_local_test.go). The two "see new members' presence"
//!   sub-tests are skipped: this node does not implement presence (no `/presence` endpoint,
//!   `presence.events` is always empty).
//! - `TestGetRoomMembers` (room_members_test.go), plus its sibling `TestGetFilteredRoomMembers`.
//! - `TestPowerLevels` (power_levels_test.go), run in a room version 11 room because its
//!   expectations (the creator listed in `users`, the creator able to demote themselves)
//!   predate room version 12; version 12's privileged creators are checked separately.
//! - `TestRoomAlias` (apidoc_room_alias_test.go).
//!
//! Beyond those: kick, ban, unban, forget, `joined_rooms`, `joined_members`, and `createRoom`
//! with `preset`, `name`, `topic`, `invite`, `initial_state`, `room_alias_name`,
//! `power_level_content_override`, `is_direct` and `room_version`.
//!
//! Nothing here needs federation, guests, third-party ids or admin APIs, so no sub-test of the
//! ported scenarios was skipped for those reasons.

use neurite_tests::{
    TestNode, User, assert_error, assert_status, enc, has_event, next_batch, timeline,
};
use serde_json::{Value, json};

/// The state event of `(ty, key)` in a `/rooms/{room}/state` response.
fn find_state<'a>(state: &'a Value, ty: &str, key: &str) -> Option<&'a Value> {
    state
        .as_array()?
        .iter()
        .find(|e| e["type"] == ty && e["state_key"] == key)
}

async fn full_state(user: &User, room: &str) -> Value {
    user.get_ok(&format!("/rooms/{}/state", enc(room))).await
}

/// Whether a sync response shows `room` among the user's invites.
fn invited_to(sync: &Value, room: &str) -> bool {
    sync["rooms"]["invite"][room].is_object()
}

/// Whether a sync response shows `room` among the user's left rooms.
fn left(sync: &Value, room: &str) -> bool {
    sync["rooms"]["leave"][room].is_object()
}

/// Whether the joined-room timeline or state of `room` shows `user` with this membership.
fn membership_in_sync(sync: &Value, room: &str, user: &str, membership: &str) -> bool {
    let joined = &sync["rooms"]["join"][room];
    let in_list = |list: &Value| {
        list.as_array().is_some_and(|evs| {
            evs.iter().any(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == user
                    && e["content"]["membership"] == membership
            })
        })
    };
    in_list(&joined["timeline"]["events"]) || in_list(&joined["state"]["events"])
}

async fn public_room_ids(user: &User) -> Vec<String> {
    let b = user.get_ok("/publicRooms").await;
    b["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
        .collect()
}

async fn joined_rooms(user: &User) -> Vec<String> {
    let b = user.get_ok("/joined_rooms").await;
    b["joined_rooms"]
        .as_array()
        .expect("joined_rooms")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// TestRoomCreate
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_room_public_with_alias_is_published_and_private_is_not() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let public = alice
        .create_room(
            json!({ "visibility": "public", "room_alias_name": "30-room-create-alias-random" }),
        )
        .await;
    let private = alice.create_room(json!({ "visibility": "private" })).await;
    assert!(public.starts_with('!') && private.starts_with('!'));
    let listed = public_room_ids(&alice).await;
    assert!(
        listed.contains(&public),
        "public room missing from /publicRooms: {listed:?}"
    );
    assert!(
        !listed.contains(&private),
        "private room listed in /publicRooms: {listed:?}"
    );
    let alias = format!("#30-room-create-alias-random:{}", node.server_name());
    let resolved = alice
        .get_ok(&format!("/directory/room/{}", enc(&alias)))
        .await;
    assert_eq!(resolved["room_id"], public.as_str());
    // A public room defaults to the public_chat preset.
    assert_eq!(
        alice.state_content(&public, "m.room.join_rules", "").await["join_rule"],
        "public"
    );
    assert_eq!(
        alice.state_content(&private, "m.room.join_rules", "").await["join_rule"],
        "invite"
    );
}

#[tokio::test]
async fn create_room_topic_is_written_as_plain_and_rich_topic() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "topic": "Test Room", "preset": "public_chat" }))
        .await;
    let content = alice.state_content(&room, "m.room.topic", "").await;
    assert_eq!(content["topic"], "Test Room");
    let text = content["m.topic"]["m.text"]
        .as_array()
        .unwrap_or_else(|| panic!("no m.topic.m.text: {content}"));
    assert_eq!(text.len(), 1, "{content}");
    assert_eq!(text[0]["body"], "Test Room");
    if let Some(mime) = text[0].get("mimetype") {
        assert_eq!(mime, "text/plain");
    }
}

#[tokio::test]
async fn create_room_topic_from_initial_state_is_kept_verbatim() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{ "type": "m.room.topic", "state_key": "", "content": { "topic": "Test Room" } }],
        }))
        .await;
    let content = alice.state_content(&room, "m.room.topic", "").await;
    assert_eq!(content["topic"], "Test Room");
    assert!(
        content.get("m.topic").is_none(),
        "unexpected rich topic: {content}"
    );
}

#[tokio::test]
async fn create_room_topic_parameter_overrides_initial_state_topic() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "topic": "Test Room",
            "initial_state": [{ "type": "m.room.topic", "state_key": "", "content": { "topic": "Shenanigans" } }],
        }))
        .await;
    let content = alice.state_content(&room, "m.room.topic", "").await;
    assert_eq!(content["topic"], "Test Room");
    assert_eq!(
        content["m.topic"]["m.text"][0]["body"], "Test Room",
        "{content}"
    );
}

#[tokio::test]
async fn create_room_name_sets_room_name() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "name": "Test Room", "preset": "public_chat" }))
        .await;
    assert_eq!(
        alice.state_content(&room, "m.room.name", "").await["name"],
        "Test Room"
    );
}

#[tokio::test]
async fn create_room_with_version_11_and_12() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let server = node.server_name();

    let v11 = alice
        .create_room(json!({ "room_version": "11", "preset": "public_chat" }))
        .await;
    let create = alice.state_content(&v11, "m.room.create", "").await;
    assert_eq!(create["room_version"], "11");
    // Since room version 11 the creator is the create event's sender, not a content field.
    assert!(create.get("creator").is_none(), "{create}");
    assert!(
        v11.ends_with(&format!(":{server}")),
        "v11 room ids carry the server name: {v11}"
    );

    let v12 = alice
        .create_room(json!({ "room_version": "12", "preset": "public_chat" }))
        .await;
    assert_eq!(
        alice.state_content(&v12, "m.room.create", "").await["room_version"],
        "12"
    );
    // In room version 12 the room id is the create event's reference hash.
    let state = full_state(&alice, &v12).await;
    let create_ev = find_state(&state, "m.room.create", "").expect("create event");
    assert_eq!(create_ev["sender"], alice.user_id.as_str());
    let create_id = create_ev["event_id"].as_str().unwrap();
    assert_eq!(v12, format!("!{}", &create_id[1..]));
    assert!(
        !v12.contains(':'),
        "v12 room ids have no server name: {v12}"
    );
    // The creator's power is implied, not listed.
    let pl = alice.state_content(&v12, "m.room.power_levels", "").await;
    assert!(pl["users"].get(&alice.user_id).is_none(), "{pl}");
}

#[tokio::test]
async fn create_room_rejects_unknown_and_non_string_versions() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    for version in ["1", "ahfgwjyerhgiuveisbruvybseyrugvi"] {
        let resp = alice
            .post("/createRoom", json!({ "visibility": "private", "room_version": version, "preset": "public_chat" }))
            .await;
        assert_error(&resp, 400, "M_UNSUPPORTED_ROOM_VERSION");
    }
    let resp = alice
        .post(
            "/createRoom",
            json!({ "visibility": "private", "room_version": 1, "preset": "public_chat" }),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn create_room_with_invite_list_reaches_invitee() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice
        .create_room(json!({ "visibility": "private", "invite": [bob.user_id] }))
        .await;
    bob.sync_until(None, |s| invited_to(s, &room)).await;
    let member = alice
        .state_content(&room, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(member["membership"], "invite");
}

#[tokio::test]
async fn newly_created_room_can_be_synced() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let id = alice.send_event(&room, "m.room.test", json!({})).await;
    alice.sync_until(None, |s| has_event(s, &room, &id)).await;
}

#[tokio::test]
async fn creation_content_is_kept_but_cannot_set_room_version() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "creation_content": { "test": "azerty", "room_version": "test", "m.federate": false } }))
        .await;
    let sync = alice
        .sync_until(None, |s| s["rooms"]["join"][&room].is_object())
        .await;
    let first = timeline(&sync, &room)[0].clone();
    assert_eq!(first["type"], "m.room.create", "{first}");
    let version = first["content"]["room_version"]
        .as_str()
        .expect("room_version");
    assert_ne!(version, "test");
    assert_eq!(first["content"]["test"], "azerty");
    assert_eq!(first["content"]["m.federate"], false);
    let create = alice.state_content(&room, "m.room.create", "").await;
    assert_eq!(create["m.federate"], false);
}

#[tokio::test]
async fn create_room_presets_set_join_rules_history_and_guest_access() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;

    let private = alice.create_room(json!({ "preset": "private_chat" })).await;
    assert_eq!(
        alice.state_content(&private, "m.room.join_rules", "").await["join_rule"],
        "invite"
    );
    assert_eq!(
        alice
            .state_content(&private, "m.room.history_visibility", "")
            .await["history_visibility"],
        "shared"
    );
    assert_eq!(
        alice
            .state_content(&private, "m.room.guest_access", "")
            .await["guest_access"],
        "can_join"
    );

    let public = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(
        alice.state_content(&public, "m.room.join_rules", "").await["join_rule"],
        "public"
    );
    assert_eq!(
        alice
            .state_content(&public, "m.room.history_visibility", "")
            .await["history_visibility"],
        "shared"
    );
    // public_chat means guest_access "forbidden", which an absent event also means.
    let (status, body) = alice
        .get(&format!(
            "/rooms/{}/state/m.room.guest_access/",
            enc(&public)
        ))
        .await;
    assert!(
        status == 404 || body["guest_access"] == "forbidden",
        "{status} {body}"
    );
    // Anyone may join a public_chat room without an invite.
    assert_eq!(bob.join(&public).await, public);

    // trusted_private_chat: invitees get the creator's power. Version 11 lists them at 100.
    let trusted11 = alice
        .create_room(json!({ "preset": "trusted_private_chat", "room_version": "11", "invite": [bob.user_id] }))
        .await;
    assert_eq!(
        alice
            .state_content(&trusted11, "m.room.join_rules", "")
            .await["join_rule"],
        "invite"
    );
    let pl = alice
        .state_content(&trusted11, "m.room.power_levels", "")
        .await;
    assert_eq!(pl["users"][&alice.user_id], 100, "{pl}");
    assert_eq!(pl["users"][&bob.user_id], 100, "{pl}");
    // Version 12 makes them additional creators instead.
    let trusted12 = alice
        .create_room(json!({ "preset": "trusted_private_chat", "room_version": "12", "invite": [bob.user_id] }))
        .await;
    let create = alice.state_content(&trusted12, "m.room.create", "").await;
    assert_eq!(
        create["additional_creators"],
        json!([bob.user_id]),
        "{create}"
    );
}

#[tokio::test]
async fn create_room_power_level_override_replaces_top_level_keys() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({
            "room_version": "11",
            "power_level_content_override": {
                "ban": 75,
                "events": { "m.room.topic": 80 },
                "users": { alice.user_id.clone(): 100, "@other:example.org": 20 },
            },
        }))
        .await;
    let pl = alice.state_content(&room, "m.room.power_levels", "").await;
    assert_eq!(pl["ban"], 75);
    assert_eq!(pl["events"], json!({ "m.room.topic": 80 }));
    assert_eq!(pl["users"]["@other:example.org"], 20);
    assert_eq!(pl["users"][&alice.user_id], 100);
    // Keys not overridden keep their defaults.
    assert_eq!(pl["kick"], 50);
    assert_eq!(pl["state_default"], 50);
}

#[tokio::test]
async fn create_room_initial_state_overrides_preset_and_adds_custom_state() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "initial_state": [
                { "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } },
                { "type": "com.example.state", "state_key": "k", "content": { "v": 1 } },
            ],
        }))
        .await;
    assert_eq!(
        alice
            .state_content(&room, "m.room.history_visibility", "")
            .await["history_visibility"],
        "joined"
    );
    assert_eq!(
        alice.state_content(&room, "com.example.state", "k").await,
        json!({ "v": 1 })
    );
    // Only one history visibility event was sent: the preset's was replaced, not overwritten.
    let sync = alice
        .sync_until(None, |s| s["rooms"]["join"][&room].is_object())
        .await;
    let hv = timeline(&sync, &room)
        .iter()
        .filter(|e| e["type"] == "m.room.history_visibility")
        .count();
    assert_eq!(hv, 1);
}

#[tokio::test]
async fn create_room_alias_name_sets_canonical_alias_and_rejects_taken_alias() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let alias = format!("#my_room:{}", node.server_name());
    let room = alice
        .create_room(json!({ "room_alias_name": "my_room" }))
        .await;
    assert_eq!(
        alice
            .state_content(&room, "m.room.canonical_alias", "")
            .await["alias"],
        alias.as_str()
    );
    let resolved = alice
        .get_ok(&format!("/directory/room/{}", enc(&alias)))
        .await;
    assert_eq!(resolved["room_id"], room.as_str());
    let resp = alice
        .post("/createRoom", json!({ "room_alias_name": "my_room" }))
        .await;
    assert_error(&resp, 400, "M_ROOM_IN_USE");
}

#[tokio::test]
async fn create_room_is_direct_marks_the_invite() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice
        .create_room(
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id] }),
        )
        .await;
    let member = alice
        .state_content(&room, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["is_direct"], true);
    let sync = bob.sync_until(None, |s| invited_to(s, &room)).await;
    let events = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("invite_state")
        .clone();
    let own = events
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("own invite in invite_state");
    assert_eq!(own["content"]["is_direct"], true);
    assert_eq!(own["sender"], alice.user_id.as_str());
}

// ---------------------------------------------------------------------------------------------
// TestRoomCreationReportsEventsToMyself
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn room_creation_reports_create_and_member_events_to_creator() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let sync = alice
        .sync_until(None, |s| s["rooms"]["join"][&room].is_object())
        .await;
    let events = timeline(&sync, &room);
    let create = events
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .expect("create in timeline");
    assert_eq!(create["sender"], alice.user_id.as_str());
    // Default room version (12): no `creator` in content.
    assert!(create["content"].get("creator").is_none(), "{create}");
    let member = events
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
        .expect("own join in timeline");
    assert_eq!(member["sender"], alice.user_id.as_str());
    assert_eq!(member["content"]["membership"], "join");
}

#[tokio::test]
async fn setting_room_topic_reports_topic_to_self() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let since = next_batch(&alice.sync(None, 0).await);
    let id = alice
        .send_state(
            &room,
            "m.room.topic",
            "",
            json!({ "topic": "Testing topic for the new room" }),
        )
        .await;
    let sync = alice
        .sync_until(Some(&since), |s| has_event(s, &room, &id))
        .await;
    let ev = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["event_id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(ev["type"], "m.room.topic");
    assert_eq!(ev["state_key"], "");
    assert_eq!(ev["sender"], alice.user_id.as_str());
    assert_eq!(ev["content"]["topic"], "Testing topic for the new room");
}

#[tokio::test]
async fn setting_identical_state_twice_returns_the_same_event() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let first = alice
        .send_state(
            &room,
            "a.test.state.type",
            "",
            json!({ "a_key": "a_value" }),
        )
        .await;
    let second = alice
        .send_state(
            &room,
            "a.test.state.type",
            "",
            json!({ "a_key": "a_value" }),
        )
        .await;
    assert_eq!(first, second);
    // Different content is a new event.
    let third = alice
        .send_state(&room, "a.test.state.type", "", json!({ "a_key": "other" }))
        .await;
    assert_ne!(first, third);
}

#[tokio::test]
async fn joining_a_room_twice_keeps_one_membership_event() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = bob
        .create_room(json!({ "visibility": "public", "preset": "public_chat" }))
        .await;
    alice.join(&room).await;
    alice
        .sync_until(None, |s| {
            membership_in_sync(s, &room, &alice.user_id, "join")
        })
        .await;
    let member_id = |state: &Value| {
        find_state(state, "m.room.member", &alice.user_id).expect("member event")["event_id"]
            .clone()
    };
    let first = member_id(&full_state(&alice, &room).await);
    alice.join(&room).await;
    // The join is handled before the request returns, so no waiting is needed here.
    let second = member_id(&full_state(&alice, &room).await);
    assert_eq!(first, second);
}

// ---------------------------------------------------------------------------------------------
// TestRoomState
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn state_member_event_fetches_my_membership() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat" }))
        .await;
    let content = alice
        .state_content(&room, "m.room.member", &alice.user_id)
        .await;
    assert_eq!(content["membership"], "join");
    let ev = alice
        .get_ok(&format!(
            "/rooms/{}/state/m.room.member/{}?format=event",
            enc(&room),
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(ev["sender"], alice.user_id.as_str());
    assert_eq!(ev["room_id"], room.as_str());
    assert_eq!(ev["content"]["membership"], "join");
    assert!(ev["event_id"].is_string());
}

#[tokio::test]
async fn state_power_levels_has_all_fields() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat", "room_alias_name": "room_alias" }))
        .await;
    let pl = alice
        .get_ok(&format!("/rooms/{}/state/m.room.power_levels", enc(&room)))
        .await;
    for key in [
        "ban",
        "kick",
        "redact",
        "users_default",
        "state_default",
        "events_default",
        "users",
        "events",
    ] {
        assert!(pl.get(key).is_some(), "power levels missing {key}: {pl}");
    }
}

#[tokio::test]
async fn joined_members_lists_me_with_profile_fields() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat" }))
        .await;
    let b = alice
        .get_ok(&format!("/rooms/{}/joined_members", enc(&room)))
        .await;
    let me = &b["joined"][&alice.user_id];
    assert!(me.is_object(), "{b}");
    assert!(
        me.get("display_name").is_some() && me.get("avatar_url").is_some(),
        "{b}"
    );
}

#[tokio::test]
async fn public_rooms_lists_newly_created_public_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat" }))
        .await;
    assert!(public_room_ids(&alice).await.contains(&room));
}

#[tokio::test]
async fn directory_alias_yields_room_id_and_servers() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat", "room_alias_name": "room_new" }))
        .await;
    let b = alice
        .get_ok(&format!(
            "/directory/room/{}",
            enc(&format!("#room_new:{}", node.server_name()))
        ))
        .await;
    assert_eq!(b["room_id"], room.as_str());
    assert!(
        b["servers"]
            .as_array()
            .is_some_and(|s| s.contains(&json!(node.server_name()))),
        "{b}"
    );
}

#[tokio::test]
async fn joined_rooms_lists_newly_created_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat" }))
        .await;
    assert!(joined_rooms(&alice).await.contains(&room));
}

#[tokio::test]
async fn room_name_and_topic_can_be_read_and_set() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat", "name": "room_name_test", "topic": "room_topic_test" }))
        .await;
    assert_eq!(
        alice
            .get_ok(&format!("/rooms/{}/state/m.room.name", enc(&room)))
            .await["name"],
        "room_name_test"
    );
    assert_eq!(
        alice
            .get_ok(&format!("/rooms/{}/state/m.room.topic", enc(&room)))
            .await["topic"],
        "room_topic_test"
    );
    // Both the trailing-slash-less and the empty-key forms of the state path work.
    alice
        .put_ok(
            &format!("/rooms/{}/state/m.room.name", enc(&room)),
            json!({ "name": "room_test_name" }),
        )
        .await;
    alice
        .put_ok(
            &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
            json!({ "topic": "room_test_topic" }),
        )
        .await;
    assert_eq!(
        alice
            .get_ok(&format!("/rooms/{}/state/m.room.name/", enc(&room)))
            .await["name"],
        "room_test_name"
    );
    assert_eq!(
        alice
            .get_ok(&format!("/rooms/{}/state/m.room.topic", enc(&room)))
            .await["topic"],
        "room_test_topic"
    );
}

#[tokio::test]
async fn full_room_state_has_the_initial_state() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat", "name": "room_test", "topic": "room_topic_test" }))
        .await;
    let state = full_state(&alice, &room).await;
    for ty in [
        "m.room.create",
        "m.room.join_rules",
        "m.room.name",
        "m.room.power_levels",
        "m.room.topic",
    ] {
        let ev = find_state(&state, ty, "").unwrap_or_else(|| panic!("{ty} missing from state"));
        assert_eq!(ev["room_id"], room.as_str());
        assert!(
            ev["event_id"].is_string()
                && ev["sender"].is_string()
                && ev["origin_server_ts"].is_number()
        );
    }
    assert!(find_state(&state, "m.room.member", &alice.user_id).is_some());
}

#[tokio::test]
async fn joined_members_is_forbidden_after_leaving() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice.leave(&room).await;
    let resp = alice
        .get(&format!(
            "/_matrix/client/r0/rooms/{}/joined_members",
            enc(&room)
        ))
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// TestRoomsInvite
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invited_user_can_join_invite_only_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| invited_to(s, &room)).await;
    bob.join(&room).await;
    bob.sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "join"))
        .await;
    alice
        .sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "join"))
        .await;
}

#[tokio::test]
async fn uninvited_user_cannot_join_invite_only_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let resp = bob.post(&format!("/join/{}", enc(&room)), json!({})).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn invited_user_can_reject_invite() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| invited_to(s, &room)).await;
    bob.leave(&room).await;
    alice
        .sync_until(None, |s| {
            membership_in_sync(s, &room, &bob.user_id, "leave")
        })
        .await;
    assert_eq!(
        alice
            .state_content(&room, "m.room.member", &bob.user_id)
            .await["membership"],
        "leave"
    );
}

#[tokio::test]
async fn invited_user_can_reject_invite_after_inviter_left() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let alice_since = next_batch(
        &alice
            .sync_until(None, |s| {
                membership_in_sync(s, &room, &alice.user_id, "join")
            })
            .await,
    );
    alice.invite(&room, &bob.user_id).await;
    let bob_since = next_batch(&bob.sync_until(None, |s| invited_to(s, &room)).await);
    alice.leave(&room).await;
    alice
        .sync_until(Some(&alice_since), |s| left(s, &room))
        .await;
    bob.leave(&room).await;
    let bob_since = next_batch(&bob.sync_until(Some(&bob_since), |s| left(s, &room)).await);
    // Once rejected, the invite does not come back.
    let after = bob.sync(Some(&bob_since), 0).await;
    assert!(!invited_to(&after, &room), "{after}");
    let initial = bob.sync(None, 0).await;
    assert!(!invited_to(&initial, &room), "{initial}");
}

#[tokio::test]
async fn users_cannot_invite_themselves() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let resp = alice
        .post(
            &format!("/rooms/{}/invite", enc(&room)),
            json!({ "user_id": alice.user_id }),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn users_cannot_invite_someone_already_joined() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;
    alice
        .sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "join"))
        .await;
    let resp = alice
        .post(
            &format!("/rooms/{}/invite", enc(&room)),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn invited_user_sees_room_metadata_in_invite_state() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "name": "Invites room" }))
        .await;
    alice.invite(&room, &bob.user_id).await;
    let sync = bob.sync_until(None, |s| invited_to(s, &room)).await;
    let events = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("invite_state")
        .clone();
    let mut seen = 0;
    for (ty, field) in [("m.room.join_rules", "join_rule"), ("m.room.name", "name")] {
        let ev = events
            .iter()
            .find(|e| e["type"] == ty)
            .unwrap_or_else(|| panic!("{ty} missing from invite_state"));
        let key = ev["state_key"].as_str().unwrap();
        let current = alice.state_content(&room, ty, key).await;
        assert_eq!(ev["content"][field], current[field], "{ty}");
        seen += 1;
    }
    assert_eq!(seen, 2);
    assert_eq!(
        events.iter().find(|e| e["type"] == "m.room.name").unwrap()["content"]["name"],
        "Invites room"
    );
}

#[tokio::test]
async fn room_creator_can_be_reinvited_after_leaving() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| invited_to(s, &room)).await;
    bob.join(&room).await;
    alice
        .sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "join"))
        .await;
    alice
        .send_state(
            &room,
            "m.room.power_levels",
            "",
            json!({ "users": { bob.user_id.clone(): 100 } }),
        )
        .await;
    alice.leave(&room).await;
    bob.sync_until(None, |s| {
        membership_in_sync(s, &room, &alice.user_id, "leave")
    })
    .await;
    bob.invite(&room, &alice.user_id).await;
    alice.sync_until(None, |s| invited_to(s, &room)).await;
    alice.join(&room).await;
    bob.sync_until(None, |s| {
        membership_in_sync(s, &room, &alice.user_id, "join")
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// TestMembersLocal
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn new_members_join_is_seen_by_themselves_and_existing_members() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let before_bob = next_batch(&alice.sync(None, 0).await);
    bob.join(&room).await;
    // The new member sees their own join.
    bob.sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "join"))
        .await;
    // The existing member sees it in an initial sync and in an incremental one.
    alice
        .sync_until(None, |s| {
            membership_in_sync(s, &room, &alice.user_id, "join")
        })
        .await;
    let inc = alice
        .sync_until(Some(&before_bob), |s| {
            membership_in_sync(s, &room, &bob.user_id, "join")
        })
        .await;
    let join = timeline(&inc, &room)
        .into_iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("bob's join in the incremental timeline")
        .clone();
    assert_eq!(join["sender"], bob.user_id.as_str());
}

// ---------------------------------------------------------------------------------------------
// TestGetRoomMembers (and TestGetFilteredRoomMembers)
// ---------------------------------------------------------------------------------------------

fn member_keys(body: &Value, room: &str) -> Vec<String> {
    let chunk = body["chunk"].as_array().expect("chunk");
    let mut keys: Vec<String> = chunk
        .iter()
        .map(|e| {
            assert_eq!(e["room_id"], room);
            assert_eq!(e["type"], "m.room.member");
            e["state_key"].as_str().expect("state_key").to_owned()
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn room_members_lists_every_member() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    alice
        .sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "join"))
        .await;
    let b = alice
        .get_ok(&format!("/rooms/{}/members", enc(&room)))
        .await;
    let mut want = vec![alice.user_id.clone(), bob.user_id.clone()];
    want.sort();
    assert_eq!(member_keys(&b, &room), want);
}

#[tokio::test]
async fn room_members_can_be_filtered_by_membership() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    alice
        .sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "join"))
        .await;
    bob.leave(&room).await;
    alice
        .sync_until(None, |s| {
            membership_in_sync(s, &room, &bob.user_id, "leave")
        })
        .await;
    let path = |q: &str| format!("/rooms/{}/members?{q}", enc(&room));
    let not_leave = alice.get_ok(&path("not_membership=leave")).await;
    assert_eq!(member_keys(&not_leave, &room), vec![alice.user_id.clone()]);
    let leave = alice.get_ok(&path("membership=leave")).await;
    assert_eq!(member_keys(&leave, &room), vec![bob.user_id.clone()]);
    let join = alice.get_ok(&path("membership=join")).await;
    assert_eq!(member_keys(&join, &room), vec![alice.user_id.clone()]);
}

// ---------------------------------------------------------------------------------------------
// TestPowerLevels
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn power_levels_are_numbers_and_creator_ranks_above_default() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "room_version": "11" })).await;
    let pl = alice.state_content(&room, "m.room.power_levels", "").await;
    for key in [
        "ban",
        "kick",
        "redact",
        "state_default",
        "events_default",
        "users_default",
    ] {
        assert!(pl[key].is_number(), "{key} is not a number: {pl}");
    }
    for map in ["events", "users"] {
        for (k, v) in pl[map].as_object().expect(map) {
            assert!(v.is_number(), "{map}.{k} is not a number: {pl}");
        }
    }
    let creator = pl["users"][&alice.user_id].as_i64().expect("creator level");
    assert!(creator > pl["users_default"].as_i64().unwrap());
}

#[tokio::test]
async fn power_levels_can_be_set_and_read_back() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "room_version": "11" })).await;
    let content = json!({
        "invite": 100,
        "users": { alice.user_id.clone(): 100, "@random-other-user:their.home": 20 },
    });
    let id = alice
        .send_state(&room, "m.room.power_levels", "", content.clone())
        .await;
    let ev = alice
        .get_ok(&format!("/rooms/{}/event/{}", enc(&room), enc(&id)))
        .await;
    assert_eq!(ev["content"], content);
}

#[tokio::test]
async fn power_levels_without_events_or_users_keys_do_not_break_the_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "room_version": "11" })).await;
    // No "events" key.
    alice
        .send_state(
            &room,
            "m.room.power_levels",
            "",
            json!({ "users": { alice.user_id.clone(): 100 } }),
        )
        .await;
    // No "users" key: alice drops to the default level 0 ...
    alice
        .send_state(&room, "m.room.power_levels", "", json!({}))
        .await;
    // ... so she may no longer change power levels (needs state_default 50): 403, not 500.
    let resp = alice
        .put(
            &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
            json!({ "users": {} }),
        )
        .await;
    assert_status(&resp, 403);
    let pl = alice.state_content(&room, "m.room.power_levels", "").await;
    assert!(pl.get("users").is_none(), "{pl}");
}

#[tokio::test]
async fn power_levels_v12_creators_are_implicitly_privileged() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice
        .create_room(json!({ "room_version": "12", "preset": "public_chat" }))
        .await;
    bob.join(&room).await;
    // Even with an empty users map the creator keeps full power.
    alice
        .send_state(&room, "m.room.power_levels", "", json!({}))
        .await;
    alice
        .send_state(&room, "m.room.name", "", json!({ "name": "still mine" }))
        .await;
    // A creator may not be listed in `users`.
    let resp = alice
        .put(
            &format!("/rooms/{}/state/m.room.power_levels", enc(&room)),
            json!({ "users": { alice.user_id.clone(): 100 } }),
        )
        .await;
    assert_status(&resp, 403);
    // Bob, at the default level, may not set state that needs 50.
    let resp = bob
        .put(
            &format!("/rooms/{}/state/m.room.name", enc(&room)),
            json!({ "name": "bob's" }),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// Kick, ban, unban, forget, joined_rooms, joined_members
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn kick_removes_member_with_reason_and_they_may_rejoin_public_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let bob_since = next_batch(&bob.sync(None, 0).await);
    alice
        .post_ok(
            &format!("/rooms/{}/kick", enc(&room)),
            json!({ "user_id": bob.user_id, "reason": "testing" }),
        )
        .await;
    let ev = alice
        .get_ok(&format!(
            "/rooms/{}/state/m.room.member/{}?format=event",
            enc(&room),
            enc(&bob.user_id)
        ))
        .await;
    assert_eq!(ev["content"]["membership"], "leave");
    assert_eq!(ev["content"]["reason"], "testing");
    assert_eq!(ev["sender"], alice.user_id.as_str());
    // Bob learns he was removed.
    let sync = bob.sync_until(Some(&bob_since), |s| left(s, &room)).await;
    let events = sync["rooms"]["leave"][&room]["timeline"]["events"].clone();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["sender"] == alice.user_id.as_str()),
        "{sync}"
    );
    assert!(!joined_rooms(&bob).await.contains(&room));
    // A kick is not a ban.
    bob.join(&room).await;
    assert!(joined_rooms(&bob).await.contains(&room));
}

#[tokio::test]
async fn members_without_power_cannot_kick_or_ban() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    carol.join(&room).await;
    for action in ["kick", "ban"] {
        let resp = bob
            .post(
                &format!("/rooms/{}/{action}", enc(&room)),
                json!({ "user_id": carol.user_id }),
            )
            .await;
        assert_error(&resp, 403, "M_FORBIDDEN");
    }
    assert_eq!(
        alice
            .state_content(&room, "m.room.member", &carol.user_id)
            .await["membership"],
        "join"
    );
}

#[tokio::test]
async fn ban_blocks_joining_until_unban() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice
        .create_room(json!({ "visibility": "public", "preset": "public_chat" }))
        .await;
    bob.join(&room).await;
    alice
        .sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "join"))
        .await;
    alice
        .post_ok(
            &format!("/rooms/{}/ban", enc(&room)),
            json!({ "user_id": bob.user_id, "reason": "Testing" }),
        )
        .await;
    alice
        .sync_until(None, |s| membership_in_sync(s, &room, &bob.user_id, "ban"))
        .await;
    let content = alice
        .state_content(&room, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(content["membership"], "ban");
    assert_eq!(content["reason"], "Testing");
    let resp = bob.post(&format!("/join/{}", enc(&room)), json!({})).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    // A banned user cannot be invited back either.
    let resp = alice
        .post(
            &format!("/rooms/{}/invite", enc(&room)),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    alice
        .post_ok(
            &format!("/rooms/{}/unban", enc(&room)),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(
        alice
            .state_content(&room, "m.room.member", &bob.user_id)
            .await["membership"],
        "leave"
    );
    bob.join(&room).await;
    assert_eq!(
        alice
            .state_content(&room, "m.room.member", &bob.user_id)
            .await["membership"],
        "join"
    );
}

#[tokio::test]
async fn users_can_be_banned_before_they_ever_joined() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    alice
        .post_ok(
            &format!("/rooms/{}/ban", enc(&room)),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    let resp = bob.post(&format!("/join/{}", enc(&room)), json!({})).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn forget_needs_leaving_first_and_hides_the_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let resp = bob
        .post(&format!("/rooms/{}/forget", enc(&room)), json!({}))
        .await;
    assert_status(&resp, 400);
    bob.leave(&room).await;
    let with_leave = json!({ "room": { "include_leave": true } });
    let sync = bob.sync_filtered(&with_leave, None, 0).await;
    assert!(
        left(&sync, &room),
        "left room missing before forgetting: {sync}"
    );
    bob.post_ok(&format!("/rooms/{}/forget", enc(&room)), json!({}))
        .await;
    let sync = bob.sync_filtered(&with_leave, None, 0).await;
    assert!(!left(&sync, &room), "forgotten room still in sync: {sync}");
    assert!(!joined_rooms(&bob).await.contains(&room));
    // Forgetting is per user: the room lives on for alice, and bob may come back.
    assert!(joined_rooms(&alice).await.contains(&room));
    bob.join(&room).await;
    assert!(joined_rooms(&bob).await.contains(&room));
}

#[tokio::test]
async fn joined_rooms_follows_join_invite_and_leave() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    assert_eq!(joined_rooms(&bob).await, Vec::<String>::new());
    let public = alice.create_room(json!({ "preset": "public_chat" })).await;
    let private = alice
        .create_room(json!({ "preset": "private_chat", "invite": [bob.user_id] }))
        .await;
    bob.join(&public).await;
    // An invite is not a joined room.
    assert_eq!(joined_rooms(&bob).await, vec![public.clone()]);
    bob.join(&private).await;
    let mut both = joined_rooms(&bob).await;
    both.sort();
    let mut want = vec![public.clone(), private.clone()];
    want.sort();
    assert_eq!(both, want);
    bob.leave(&public).await;
    assert_eq!(joined_rooms(&bob).await, vec![private]);
}

#[tokio::test]
async fn joined_members_lists_only_joined_users_with_their_profiles() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    alice
        .put_ok(
            &format!("/profile/{}/displayname", enc(&alice.user_id)),
            json!({ "displayname": "Alice A." }),
        )
        .await;
    alice
        .put_ok(
            &format!("/profile/{}/avatar_url", enc(&alice.user_id)),
            json!({ "avatar_url": "mxc://example.org/alice" }),
        )
        .await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    alice.invite(&room, &carol.user_id).await;
    let b = bob
        .get_ok(&format!("/rooms/{}/joined_members", enc(&room)))
        .await;
    let joined = b["joined"].as_object().expect("joined");
    let mut users: Vec<&String> = joined.keys().collect();
    users.sort();
    let mut want = vec![&alice.user_id, &bob.user_id];
    want.sort();
    assert_eq!(users, want, "{b}");
    assert_eq!(joined[&alice.user_id]["display_name"], "Alice A.");
    assert_eq!(
        joined[&alice.user_id]["avatar_url"],
        "mxc://example.org/alice"
    );
    // Not a member: forbidden.
    let outsider = node.register("dave").await;
    let resp = outsider
        .get(&format!("/rooms/{}/joined_members", enc(&room)))
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// TestRoomAlias
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn put_directory_alias_creates_alias() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let alias = format!("#creates_alias:{}", node.server_name());
    alice
        .put_ok(
            &format!("/directory/room/{}", enc(&alias)),
            json!({ "room_id": room }),
        )
        .await;
    let b = alice
        .get_ok(&format!("/directory/room/{}", enc(&alias)))
        .await;
    assert_eq!(b["room_id"], room.as_str());
}

#[tokio::test]
async fn room_aliases_lists_aliases() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let b = alice
        .get_ok(&format!("/rooms/{}/aliases", enc(&room)))
        .await;
    assert_eq!(b["aliases"], json!([]));
    let alias = format!("#lists_aliases:{}", node.server_name());
    alice
        .put_ok(
            &format!("/directory/room/{}", enc(&alias)),
            json!({ "room_id": room }),
        )
        .await;
    let b = alice
        .get_ok(&format!("/rooms/{}/aliases", enc(&room)))
        .await;
    assert_eq!(b["aliases"], json!([alias]));
}

#[tokio::test]
async fn only_room_members_can_list_aliases() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({})).await;
    let alias = format!("#room_members_list:{}", node.server_name());
    alice
        .put_ok(
            &format!("/directory/room/{}", enc(&alias)),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(
        alice
            .get_ok(&format!("/directory/room/{}", enc(&alias)))
            .await["room_id"],
        room.as_str()
    );
    let resp = bob.get(&format!("/rooms/{}/aliases", enc(&room))).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn room_aliases_can_contain_unicode() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let alias = format!("#老虎Â£я🤨👉ඞ:{}", node.server_name());
    alice
        .put_ok(
            &format!("/directory/room/{}", enc(&alias)),
            json!({ "room_id": room }),
        )
        .await;
    let b = alice
        .get_ok(&format!("/directory/room/{}", enc(&alias)))
        .await;
    assert_eq!(b["room_id"], room.as_str());
}

#[tokio::test]
async fn taken_alias_conflicts_and_unknown_alias_is_not_found() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let other = alice.create_room(json!({})).await;
    let alias = format!("#taken:{}", node.server_name());
    alice
        .put_ok(
            &format!("/directory/room/{}", enc(&alias)),
            json!({ "room_id": room }),
        )
        .await;
    let resp = alice
        .put(
            &format!("/directory/room/{}", enc(&alias)),
            json!({ "room_id": other }),
        )
        .await;
    assert_status(&resp, 409);
    let missing = format!("#missing:{}", node.server_name());
    let resp = alice
        .get(&format!("/directory/room/{}", enc(&missing)))
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    let resp = alice
        .call(
            reqwest::Method::DELETE,
            &format!("/directory/room/{}", enc(&missing)),
            None,
        )
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    // The alias resolves to the first room still, and deleting it frees it.
    assert_eq!(
        alice
            .get_ok(&format!("/directory/room/{}", enc(&alias)))
            .await["room_id"],
        room.as_str()
    );
    let resp = alice
        .call(
            reqwest::Method::DELETE,
            &format!("/directory/room/{}", enc(&alias)),
            None,
        )
        .await;
    assert_status(&resp, 200);
    let resp = alice.get(&format!("/directory/room/{}", enc(&alias))).await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}
