//! Hostile peers: a server of the tests' own ([`EvilPeer`]) signs whatever it likes and sends
//! it through the real federation path to a real node, which must not let it take over its
//! users' view of their rooms.

use neurite_tests::{
    TestNode, User, assert_error, assert_status, enc, evil::EvilPeer, has_event, serde_json,
};
use reqwest::Method;
use serde_json::{Value, json};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// The create event's id of a room of version 12 (its room id is the create event's hash).
fn create_event_of(room_id: &str) -> String {
    format!("${}", room_id.trim_start_matches('!'))
}

/// An `m.room.member` event from the evil server's `mallory` about `target`.
fn member_event(evil: &EvilPeer, room_id: &str, target: &str, membership: &str) -> Value {
    json!({
        "type": "m.room.member",
        "room_id": room_id,
        "sender": evil.user_id("mallory"),
        "state_key": target,
        "content": { "membership": membership },
        "origin_server_ts": now_ms(),
        "depth": 5,
        "prev_events": [create_event_of(room_id)],
        "auth_events": [create_event_of(room_id)],
    })
}

/// Sends `event` (signed by the evil server) as an invite to `path_room`, with `state`.
async fn send_invite(
    evil: &EvilPeer,
    path_room: &str,
    event: Value,
    state: Value,
) -> (reqwest::StatusCode, Value) {
    let (event_id, signed) = evil.sign_pdu(event);
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        enc(path_room),
        enc(&event_id)
    );
    evil.request(
        Method::PUT,
        &path,
        Some(json!({ "room_version": "12", "event": signed, "invite_room_state": state })),
    )
    .await
}

/// Whether a sync response shows any invite at all.
fn has_invites(sync: &Value) -> bool {
    sync["rooms"]["invite"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
}

/// A small room that lives on the evil server only: create, mallory's join, power levels and
/// join rules, each with proper prev and auth events. Returns the room id, the id of the
/// last event and the stripped state an invite carries.
fn evil_room(evil: &EvilPeer) -> (String, Vec<String>, Vec<String>, Value) {
    let mallory = evil.user_id("mallory");
    let ts = now_ms();
    let (create_id, _) = evil.sign_pdu(json!({
        "type": "m.room.create", "state_key": "", "sender": mallory,
        "content": { "room_version": "12" },
        "origin_server_ts": ts, "depth": 1, "prev_events": [], "auth_events": [],
    }));
    let room_id = format!("!{}", create_id.trim_start_matches('$'));
    let (join_id, _) = evil.sign_pdu(json!({
        "type": "m.room.member", "state_key": mallory, "sender": mallory, "room_id": room_id,
        "content": { "membership": "join" },
        "origin_server_ts": ts + 1, "depth": 2, "prev_events": [create_id], "auth_events": [],
    }));
    let (pl_id, _) = evil.sign_pdu(json!({
        "type": "m.room.power_levels", "state_key": "", "sender": mallory, "room_id": room_id,
        "content": { "users": {}, "invite": 0 },
        "origin_server_ts": ts + 2, "depth": 3, "prev_events": [join_id],
        "auth_events": [join_id],
    }));
    let (rules_id, _) = evil.sign_pdu(json!({
        "type": "m.room.join_rules", "state_key": "", "sender": mallory, "room_id": room_id,
        "content": { "join_rule": "invite" },
        "origin_server_ts": ts + 3, "depth": 4, "prev_events": [pl_id],
        "auth_events": [join_id, pl_id],
    }));
    let stripped = json!([
        { "type": "m.room.create", "state_key": "", "sender": mallory,
          "content": { "room_version": "12" } },
        { "type": "m.room.join_rules", "state_key": "", "sender": mallory,
          "content": { "join_rule": "invite" } },
        { "type": "m.room.name", "state_key": "", "sender": mallory,
          "content": { "name": "Mallory's den" } },
    ]);
    (
        room_id,
        vec![rules_id.clone()],
        vec![join_id, pl_id, rules_id],
        stripped,
    )
}

#[tokio::test]
async fn the_evil_peer_speaks_signed_federation() {
    let node = TestNode::start().await;
    let evil = EvilPeer::connect(&node).await;
    assert_ne!(evil.server_name(), node.server_name());
    assert_eq!(evil.server_name().len(), 52);

    let version = assert_status(
        &evil
            .request(Method::GET, "/_matrix/federation/v1/version", None)
            .await,
        200,
    );
    assert_eq!(version["server"]["name"], "Neurite");
    // The node checks what it gets: a request without a signature is refused.
    let path = "/_matrix/federation/v1/query/profile?user_id=%40a%3Ab";
    assert_error(
        &evil.request_with_auth(Method::GET, path, None, None).await,
        401,
        "M_UNAUTHORIZED",
    );
}

#[tokio::test]
async fn a_forged_invite_cannot_push_a_joined_user_out_of_a_room() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "name": "Mine", "preset": "private_chat" }))
        .await;
    let said = alice.send_text(&room, "my history").await;
    let evil = EvilPeer::connect(&node).await;

    let forged = member_event(&evil, &room, &alice.user_id, "invite");
    let resp = send_invite(&evil, &room, forged, json!([])).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert!(resp.1.get("event").is_none(), "nothing is counter-signed");

    let sync = alice.sync(None, 0).await;
    assert!(
        sync["rooms"]["join"][&room].is_object(),
        "the room is still joined: {sync}"
    );
    assert!(has_event(&sync, &room, &said), "history is still there");
    assert!(!has_invites(&sync), "no invite shows: {sync}");
    // And Alice can still speak in it.
    alice.send_text(&room, "still here").await;
}

#[tokio::test]
async fn invites_that_are_not_invites_of_a_local_user_are_refused_and_not_stored() {
    let node = TestNode::start().await;
    let bob = node.register("bob").await;
    let alice = node.register("alice").await;
    let evil = EvilPeer::connect(&node).await;
    let (room, prevs, auths, stripped) = evil_room(&evil);
    let invite = |target: &str, membership: &str| {
        let mut ev = member_event(&evil, &room, target, membership);
        ev["prev_events"] = json!(prevs);
        ev["auth_events"] = json!(auths);
        ev
    };

    // Other memberships dressed up as invites.
    for membership in ["join", "ban", "leave"] {
        let resp = send_invite(&evil, &room, invite(&bob.user_id, membership), json!([])).await;
        assert_error(&resp, 400, "M_BAD_JSON");
    }
    // An invite to one room, sent as an invite to another.
    let other_room = format!("!{}", "A".repeat(43));
    let resp = send_invite(
        &evil,
        &other_room,
        invite(&bob.user_id, "invite"),
        json!([]),
    )
    .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    // A local user who does not exist.
    let nobody = format!("@nobody:{}", node.server_name());
    let resp = send_invite(&evil, &room, invite(&nobody, "invite"), json!([])).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    // A user of another server.
    let elsewhere = evil.user_id("victim");
    let resp = send_invite(&evil, &room, invite(&elsewhere, "invite"), json!([])).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    // Sent by a user of another server than the one asking.
    let mut foreign = invite(&bob.user_id, "invite");
    foreign["sender"] = json!(format!("@alice:{}", node.server_name()));
    let resp = send_invite(&evil, &room, foreign, json!([])).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    // Too many stripped state events, or too many bytes of them.
    let many: Vec<Value> = (0..51)
        .map(|i| json!({ "type": "m.room.name", "state_key": format!("{i}"), "sender": "@m:x", "content": {} }))
        .collect();
    let resp = send_invite(&evil, &room, invite(&bob.user_id, "invite"), json!(many)).await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    let big = json!([{ "type": "m.room.topic", "state_key": "", "sender": "@m:x",
                       "content": { "topic": "x".repeat(70 * 1024) } }]);
    let resp = send_invite(&evil, &room, invite(&bob.user_id, "invite"), big).await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    // An invite whose id is not the one in the path.
    let (_, signed) = evil.sign_pdu(invite(&bob.user_id, "invite"));
    let (other_id, _) = evil.sign_pdu(invite(&alice.user_id, "invite"));
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        enc(&room),
        enc(&other_id)
    );
    let resp = evil
        .request(
            Method::PUT,
            &path,
            Some(json!({ "room_version": "12", "event": signed, "invite_room_state": stripped })),
        )
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");

    let sync = bob.sync(None, 0).await;
    assert!(!has_invites(&sync), "nothing was stored: {sync}");
    let sync = alice.sync(None, 0).await;
    assert!(!has_invites(&sync), "nothing was stored: {sync}");
}

#[tokio::test]
async fn a_forged_invite_cannot_lift_a_ban() {
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
    let evil = EvilPeer::connect(&node).await;
    let forged = member_event(&evil, &room, &bob.user_id, "invite");
    let resp = send_invite(&evil, &room, forged, json!([])).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    let sync = bob.sync(None, 0).await;
    assert!(!has_invites(&sync), "no invite shows: {sync}");
}

/// A new room of the evil server's own ([`evil_room`]) and mallory's invite of `target` into
/// it, in its place in the room's graph. Returns the room id, the invite and its stripped
/// state.
fn invite_into_evil_room(evil: &EvilPeer, target: &str) -> (String, Value, Value) {
    let (room, prevs, auths, stripped) = evil_room(evil);
    let mut invite = member_event(evil, &room, target, "invite");
    invite["prev_events"] = json!(prevs);
    invite["auth_events"] = json!(auths);
    invite["depth"] = json!(5);
    (room, invite, stripped)
}

#[tokio::test]
async fn a_genuine_invite_from_another_server_still_arrives() {
    let node = TestNode::start().await;
    let bob: User = node.register("bob").await;
    let evil = EvilPeer::connect(&node).await;
    let (room, invite, stripped) = invite_into_evil_room(&evil, &bob.user_id);
    let resp = send_invite(&evil, &room, invite, stripped).await;
    let body = assert_status(&resp, 200);
    let signatures = &body["event"]["signatures"];
    assert!(
        signatures[node.server_name()].is_object() && signatures[evil.server_name()].is_object(),
        "signed by both servers: {body}"
    );

    let sync = bob
        .sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let events = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Mallory's den"),
        "the invite's stripped state shows: {events:?}"
    );
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["sender"] == evil.user_id("mallory").as_str()
            && e["content"]["membership"] == "invite"),
        "the invite itself shows: {events:?}"
    );
}

/// `GET /event/{id}` for the evil server.
async fn fetch_event(evil: &EvilPeer, event_id: &str) -> (reqwest::StatusCode, Value) {
    evil.request(
        Method::GET,
        &format!("/_matrix/federation/v1/event/{}", enc(event_id)),
        None,
    )
    .await
}

#[tokio::test]
async fn events_fetched_over_federation_follow_history_visibility() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": { "history_visibility": "joined" },
            }],
        }))
        .await;
    let before = alice.send_text(&room, "before mallory came").await;
    let evil = EvilPeer::connect(&node).await;

    // Not in the room: nothing at all.
    assert_error(&fetch_event(&evil, &before).await, 403, "M_FORBIDDEN");

    // Mallory joins through the node (make_join, then send_join of the signed template).
    evil.join(&room, "mallory").await;
    let after = alice.send_text(&room, "after mallory came").await;

    // From before the join: the event, redacted (its graph place kept, its content not).
    let old = assert_status(&fetch_event(&evil, &before).await, 200);
    let pdu = &old["pdus"][0];
    assert_eq!(pdu["type"], "m.room.message", "{old}");
    assert_eq!(pdu["room_id"], room.as_str());
    assert_eq!(
        pdu["content"],
        json!({}),
        "redacted for mallory's server: {old}"
    );
    assert!(pdu["hashes"]["sha256"].is_string(), "{old}");
    // From after the join: whole.
    let new = assert_status(&fetch_event(&evil, &after).await, 200);
    assert_eq!(
        new["pdus"][0]["content"]["body"], "after mallory came",
        "{new}"
    );
    // Alice's own view of the old event is whole.
    let mine = alice
        .get_ok(&format!("/rooms/{}/event/{}", enc(&room), enc(&before)))
        .await;
    assert_eq!(mine["content"]["body"], "before mallory came");
}

/// A stranger's server cannot post to-device messages to local users it shares no room
/// with (with `*`, every device of theirs): they would pile up in the database and reach
/// clients as if from someone they know.
#[tokio::test]
async fn to_device_messages_from_a_stranger_are_not_delivered() {
    let node = TestNode::start().await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    let evil = EvilPeer::connect(&node).await;
    let edu = json!({
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": evil.user_id("mallory"),
            "type": "m.room_key_request",
            "message_id": "spam-1",
            "messages": { &bob.user_id: { "*": { "junk": "x".repeat(1000) } } },
        },
    });
    let txn = json!({ "origin": evil.server_name(), "origin_server_ts": now_ms(), "pdus": [], "edus": [edu] });
    assert_status(
        &evil
            .request(Method::PUT, "/_matrix/federation/v1/send/spam1", Some(txn))
            .await,
        200,
    );
    // A message from someone who may send one arrives after it: once Bob sees that, the
    // stranger's would have been there too.
    carol
        .send_to_device(
            "m.test.hello",
            json!({ &bob.user_id: { &bob.device_id: { "hi": true } } }),
        )
        .await;
    let sync = bob
        .sync_until(None, |s| !neurite_tests::to_device_events(s).is_empty())
        .await;
    let types: Vec<Value> = neurite_tests::to_device_events(&sync)
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(types, vec![json!("m.test.hello")], "{sync}");
}

/// One server cannot bury a user under invites (each with up to 64 KiB of stripped state to
/// store): past 100 unanswered ones from it, more are refused, while another server's still
/// arrive.
#[tokio::test]
async fn invites_from_one_server_are_bounded() {
    let node = TestNode::start().await;
    let bob: User = node.register("bob").await;
    let evil = EvilPeer::connect(&node).await;
    let invite_into = |evil: &EvilPeer| invite_into_evil_room(evil, &bob.user_id);
    for _ in 0..100 {
        let (room, invite, stripped) = invite_into(&evil);
        assert_status(&send_invite(&evil, &room, invite, stripped).await, 200);
    }
    let (room, invite, stripped) = invite_into(&evil);
    assert_error(
        &send_invite(&evil, &room, invite, stripped).await,
        403,
        "M_FORBIDDEN",
    );
    // Another server is not held back by the first one's invites.
    let other = EvilPeer::connect(&node).await;
    let (room, invite, stripped) = invite_into(&other);
    assert_status(&send_invite(&other, &room, invite, stripped).await, 200);
    let sync = bob
        .sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let invites = sync["rooms"]["invite"].as_object().map_or(0, |m| m.len());
    assert_eq!(
        invites, 101,
        "100 from the first server and one from the other"
    );
}

/// A room that lives on the evil server, with every event kept signed: create, mallory's
/// join, power levels giving mallory 100, public join rules. Returns the room id and the
/// events by name.
fn evil_public_room(
    evil: &EvilPeer,
) -> (
    String,
    std::collections::HashMap<&'static str, (String, Value)>,
) {
    let mallory = evil.user_id("mallory");
    let ts = now_ms();
    let create = evil.sign_pdu(json!({
        "type": "m.room.create", "state_key": "", "sender": mallory,
        "content": { "room_version": "12" },
        "origin_server_ts": ts, "depth": 1, "prev_events": [], "auth_events": [],
    }));
    let room_id = format!("!{}", create.0.trim_start_matches('$'));
    let join = evil.sign_pdu(json!({
        "type": "m.room.member", "state_key": mallory, "sender": mallory, "room_id": room_id,
        "content": { "membership": "join" },
        "origin_server_ts": ts + 1, "depth": 2, "prev_events": [create.0], "auth_events": [],
    }));
    let power = |ts: u64, prev: &str, users: Value| {
        evil.sign_pdu(json!({
            "type": "m.room.power_levels", "state_key": "", "sender": mallory,
            "room_id": room_id, "content": { "users": users },
            "origin_server_ts": ts, "depth": 3, "prev_events": [prev],
            "auth_events": [join.0],
        }))
    };
    let levels = power(ts + 2, &join.0, json!({ &mallory: 100 }));
    // Another power-levels event, valid on its own, that the room's state does not hold.
    let swapped = power(
        ts + 3,
        &join.0,
        json!({ &mallory: 100, "@eve:elsewhere": 100 }),
    );
    let rules = evil.sign_pdu(json!({
        "type": "m.room.join_rules", "state_key": "", "sender": mallory, "room_id": room_id,
        "content": { "join_rule": "public" },
        "origin_server_ts": ts + 4, "depth": 4, "prev_events": [levels.0],
        "auth_events": [join.0, levels.0],
    }));
    let events = [
        ("create", create),
        ("join", join),
        ("levels", levels),
        ("swapped", swapped),
        ("rules", rules),
    ];
    (room_id, events.into_iter().collect())
}

/// The server a user joins through answers `send_join` with the room's state: a resident
/// that hands over another state than the one the join was built on (power levels swapped
/// for its own choice) is refused and nothing of it is kept; the honest answer is taken.
#[tokio::test]
async fn a_resident_cannot_hand_a_joiner_another_state() {
    let node = TestNode::start().await;
    let bob: User = node.register("bob").await;
    let evil = EvilPeer::connect(&node).await;
    let (room, ev) = evil_public_room(&evil);
    let template = json!({
        "type": "m.room.member", "state_key": bob.user_id, "sender": bob.user_id,
        "room_id": room, "content": { "membership": "join" },
        "origin_server_ts": now_ms(), "depth": 5, "prev_events": [ev["rules"].0],
        "auth_events": [ev["levels"].0, ev["rules"].0],
    });
    evil.answer("GET", "/_matrix/federation/v1/make_join/", move |_| {
        (
            reqwest::StatusCode::OK,
            json!({ "room_version": "12", "event": template }),
        )
    });
    let honest = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chain: Vec<Value> = ["create", "join", "levels", "swapped", "rules"]
        .iter()
        .map(|k| ev[k].1.clone())
        .collect();
    let (state_honest, state_swapped): (Vec<Value>, Vec<Value>) = (
        ["create", "join", "levels", "rules"]
            .iter()
            .map(|k| ev[k].1.clone())
            .collect(),
        ["create", "join", "swapped", "rules"]
            .iter()
            .map(|k| ev[k].1.clone())
            .collect(),
    );
    let switch = honest.clone();
    evil.answer("PUT", "/_matrix/federation/v2/send_join/", move |_| {
        let state = if switch.load(std::sync::atomic::Ordering::SeqCst) {
            state_honest.clone()
        } else {
            state_swapped.clone()
        };
        (
            reqwest::StatusCode::OK,
            json!({ "state": state, "auth_chain": chain }),
        )
    });

    let path = format!("/join/{}?server_name={}", enc(&room), evil.server_name());
    let refused = bob.post(&path, json!({})).await;
    assert!(refused.0.is_client_error(), "{refused:?}");
    assert!(
        refused.1["error"]
            .as_str()
            .unwrap_or("")
            .contains("send_join answer refused"),
        "{refused:?}"
    );
    // Nothing of the answer became the room's state here.
    let joined = bob.get_ok("/joined_rooms").await;
    assert_eq!(joined["joined_rooms"], json!([]), "{joined}");
    assert_error(
        &bob.get(&format!("/rooms/{}/state/m.room.power_levels/", enc(&room)))
            .await,
        403,
        "M_FORBIDDEN",
    );

    // The same resident answering with the state the join was built on is taken.
    honest.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_status(&bob.post(&path, json!({})).await, 200);
    let levels = bob.state_content(&room, "m.room.power_levels", "").await;
    assert_eq!(levels["users"], json!({ evil.user_id("mallory"): 100 }));
}
