//! Simplified sliding sync (MSC4186): lists and ranges, ordering, filters, `required_state`,
//! rooms named by their heroes, room subscriptions, the extensions, unknown positions, resuming after a restart and
//! long-polling.

use std::time::{Duration, Instant};

use neurite_tests::{TestNode, User, WAIT, assert_error, enc, login_on_device};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const PASSWORD: &str = "correct horse";

/// One sliding sync request; returns the status and body.
async fn request(
    user: &User,
    pos: Option<&str>,
    timeout_ms: u64,
    body: &Value,
) -> (StatusCode, Value) {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(p) = pos {
        path.push_str(&format!("&pos={}", enc(p)));
    }
    user.post(&path, body.clone()).await
}

/// One sliding sync request that must succeed.
async fn sliding(user: &User, pos: Option<&str>, body: &Value) -> Value {
    let (status, resp) = request(user, pos, 0, body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

/// Long-polls from `pos` until `pred` holds; bounded by [`WAIT`].
async fn sliding_until(
    user: &User,
    pos: &str,
    body: &Value,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut pos = pos.to_owned();
    loop {
        let (status, resp) = request(user, Some(&pos), 1000, body).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        if pred(&resp) {
            return resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sliding sync condition not met within {WAIT:?}: {resp}"
        );
        pos = pos_of(&resp);
    }
}

fn pos_of(resp: &Value) -> String {
    resp["pos"].as_str().expect("pos").to_owned()
}

fn room_ids(resp: &Value) -> Vec<String> {
    resp["rooms"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn state_keys(room: &Value, ty: &str) -> Vec<String> {
    let mut keys: Vec<String> = room["required_state"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|e| e["type"] == ty)
                .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

fn all_rooms_list(range_end: u64, timeline_limit: u64) -> Value {
    json!({
        "lists": { "all": {
            "ranges": [[0, range_end]],
            "timeline_limit": timeline_limit,
            "required_state": [["m.room.name", ""]],
        }}
    })
}

#[tokio::test]
async fn versions_advertise_simplified_sliding_sync() {
    let node = TestNode::start().await;
    let (status, versions) = node
        .request(reqwest::Method::GET, "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        versions["unstable_features"]["org.matrix.simplified_msc3575"],
        true
    );
    // Element X also wants authenticated media, which came with v1.11.
    assert!(
        versions["versions"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == "v1.11")),
        "{versions}"
    );
}

#[tokio::test]
async fn lists_are_ordered_by_recency_and_cut_by_ranges() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let first = alice.create_room(json!({ "name": "first" })).await;
    let second = alice.create_room(json!({ "name": "second" })).await;
    let third = alice.create_room(json!({ "name": "third" })).await;
    alice.send_text(&first, "first is newest").await;

    let body = all_rooms_list(1, 1);
    let resp = sliding(&alice, None, &body).await;
    assert_eq!(resp["lists"]["all"]["count"], 3, "{resp}");
    let mut got = room_ids(&resp);
    got.sort();
    let mut want = vec![first.clone(), third.clone()];
    want.sort();
    assert_eq!(got, want, "the two most recent rooms: {resp}");
    let room = &resp["rooms"][&first];
    assert_eq!(room["initial"], true);
    assert_eq!(room["name"], "first");
    assert_eq!(bodies(room), vec!["first is newest"]);
    assert_eq!(room["limited"], true, "older events exist: {room}");
    assert_eq!(room["joined_count"], 1);
    assert!(
        room["bump_stamp"].as_i64() > resp["rooms"][&third]["bump_stamp"].as_i64(),
        "{resp}"
    );

    // A message moves the second room to the top: it enters the range, new to the client.
    alice.send_text(&second, "now second is newest").await;
    let next = sliding_until(&alice, &pos_of(&resp), &body, |r| {
        r["rooms"].get(&second).is_some()
    })
    .await;
    assert_eq!(next["rooms"][&second]["initial"], true, "{next}");
    assert_eq!(
        bodies(&next["rooms"][&second]),
        vec!["now second is newest"]
    );
    assert!(
        next["rooms"].get(&third).is_none(),
        "unchanged rooms stay out: {next}"
    );
    assert_eq!(next["lists"]["all"]["count"], 3);

    // A new message in a room the client holds comes incrementally.
    alice.send_text(&first, "again").await;
    let inc = sliding_until(&alice, &pos_of(&next), &body, |r| {
        r["rooms"].get(&first).is_some()
    })
    .await;
    let room = &inc["rooms"][&first];
    assert!(room.get("initial").is_none(), "{room}");
    assert_eq!(bodies(room), vec!["again"]);
    assert_eq!(room["num_live"], 1);
    assert_eq!(room["limited"], false);
}

#[tokio::test]
async fn bad_ranges_and_bodies_are_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let resp = request(
        &alice,
        None,
        0,
        &json!({ "lists": { "a": { "ranges": [[5, 1]] } } }),
    )
    .await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
    let resp = request(
        &alice,
        None,
        0,
        &json!({ "lists": { "a": { "ranges": "all" } } }),
    )
    .await;
    assert_error(&resp, 400, "M_BAD_JSON");
    let resp = alice.post(&format!("{PATH}?timeout=soon"), json!({})).await;
    assert_error(&resp, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn required_state_follows_the_rules() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "name": "rules", "topic": "a topic" }))
        .await;
    carol.join(&room).await;
    bob.join(&room).await;
    bob.send_text(&room, "from bob").await;

    let body = json!({
        "lists": { "all": {
            "ranges": [[0, 9]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""],
                ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"],
            ],
        }}
    });
    let resp = sliding(&alice, None, &body).await;
    let r = &resp["rooms"][&room];
    assert_eq!(state_keys(r, "m.room.name"), vec![""]);
    let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
    members.sort();
    assert_eq!(
        state_keys(r, "m.room.member"),
        members,
        "lazy members and me: {r}"
    );
    assert!(state_keys(r, "m.room.topic").is_empty(), "{r}");
    assert_eq!(r["joined_count"], 3);
    assert_eq!(r["name"], "rules");

    // Everything, on a second connection of the same device.
    let all = json!({
        "conn_id": "everything",
        "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 0, "required_state": [["*", "*"]] } }
    });
    let resp = sliding(&alice, None, &all).await;
    let r = &resp["rooms"][&room];
    assert_eq!(state_keys(r, "m.room.topic"), vec![""]);
    assert_eq!(state_keys(r, "m.room.create"), vec![""]);
    assert_eq!(state_keys(r, "m.room.member").len(), 3, "{r}");
    assert!(r["timeline"].as_array().is_some_and(Vec::is_empty), "{r}");
    let pos = pos_of(&resp);

    // Incrementally only what changed.
    alice
        .put_ok(
            &format!("/rooms/{}/state/m.room.topic/", enc(&room)),
            json!({ "topic": "new topic" }),
        )
        .await;
    let inc = sliding_until(&alice, &pos, &all, |r| r["rooms"].get(&room).is_some()).await;
    let r = &inc["rooms"][&room];
    assert_eq!(state_keys(r, "m.room.topic"), vec![""], "{r}");
    assert!(state_keys(r, "m.room.member").is_empty(), "{r}");
    assert!(state_keys(r, "m.room.create").is_empty(), "{r}");
}

#[tokio::test]
async fn a_direct_chat_is_named_after_its_invitee() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    for (field, value) in [
        ("displayname", "Bob B."),
        ("avatar_url", "mxc://example.org/bob"),
    ] {
        bob.put_ok(
            &format!("/profile/{}/{field}", enc(&bob.user_id)),
            json!({ field: value }),
        )
        .await;
    }
    // What matrix-sdk's create_dm sends.
    let dm = alice
        .create_room(json!({
            "preset": "trusted_private_chat",
            "is_direct": true,
            "invite": [bob.user_id],
            "initial_state": [{
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": "m.megolm.v1.aes-sha2" },
            }],
        }))
        .await;
    let named = alice.create_room(json!({ "name": "Named" })).await;
    alice.invite(&named, &bob.user_id).await;

    // The invites carry Bob's profile, from createRoom as from /invite.
    for room in [&dm, &named] {
        let member = alice
            .get_ok(&format!(
                "/rooms/{}/state/m.room.member/{}",
                enc(room),
                enc(&bob.user_id)
            ))
            .await;
        assert_eq!(member["membership"], "invite", "{member}");
        assert_eq!(member["displayname"], "Bob B.", "{member}");
        assert_eq!(member["avatar_url"], "mxc://example.org/bob", "{member}");
    }

    // Element X's room list: lazy members, the encryption state, one event of timeline.
    let body = json!({
        "lists": { "all": {
            "ranges": [[0, 9]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""],
                ["m.room.encryption", ""],
                ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"],
            ],
        }}
    });
    let resp = sliding(&alice, None, &body).await;
    let r = &resp["rooms"][&dm];
    assert_eq!(
        r["heroes"],
        json!([{
            "user_id": bob.user_id,
            "displayname": "Bob B.",
            "avatar_url": "mxc://example.org/bob",
        }]),
        "{r}"
    );
    assert!(r.get("name").is_none(), "{r}");
    assert_eq!(r["joined_count"], 1, "{r}");
    assert_eq!(r["invited_count"], 1, "{r}");
    assert_eq!(state_keys(r, "m.room.encryption"), vec![""], "{r}");
    // Bob has sent nothing, yet his member event comes: the client names the room after him.
    let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
    members.sort();
    assert_eq!(state_keys(r, "m.room.member"), members, "{r}");
    // A named room needs no heroes.
    let r = &resp["rooms"][&named];
    assert_eq!(r["name"], "Named", "{r}");
    assert!(r.get("heroes").is_none(), "{r}");
    assert_eq!(
        state_keys(r, "m.room.member"),
        vec![alice.user_id.clone()],
        "{r}"
    );

    // A client that asks for no members gets the heroes but no member events.
    let body = json!({
        "conn_id": "no-members",
        "lists": { "all": {
            "ranges": [[0, 9]],
            "timeline_limit": 1,
            "required_state": [["m.room.encryption", ""]],
        }}
    });
    let resp = sliding(&alice, None, &body).await;
    let r = &resp["rooms"][&dm];
    assert_eq!(r["heroes"][0]["displayname"], "Bob B.", "{r}");
    assert!(state_keys(r, "m.room.member").is_empty(), "{r}");
}

#[tokio::test]
async fn room_subscriptions_and_a_usable_prev_batch() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({})).await;
    let elsewhere = bob.create_room(json!({})).await;
    for i in 0..5 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let body = json!({
        "room_subscriptions": {
            room.clone(): { "timeline_limit": 2, "required_state": [] },
            elsewhere.clone(): { "timeline_limit": 2 },
        }
    });
    let resp = sliding(&alice, None, &body).await;
    assert_eq!(
        room_ids(&resp),
        vec![room.clone()],
        "not someone else's room: {resp}"
    );
    let r = &resp["rooms"][&room];
    assert_eq!(bodies(r), vec!["m3", "m4"]);
    assert_eq!(r["limited"], true);
    let prev = r["prev_batch"].as_str().expect("prev_batch");
    let older = alice
        .get_ok(&format!(
            "/rooms/{}/messages?dir=b&limit=2&from={}",
            enc(&room),
            enc(prev)
        ))
        .await;
    let older: Vec<&str> = older["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(older, vec!["m2", "m1"]);
}

#[tokio::test]
async fn filters_pick_direct_chats_invites_and_spaces() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let dm = alice.create_room(json!({ "is_direct": true })).await;
    let plain = alice.create_room(json!({})).await;
    let space = alice
        .create_room(json!({ "creation_content": { "type": "m.space" } }))
        .await;
    alice
        .put_ok(
            &format!("/user/{}/account_data/m.direct", enc(&alice.user_id)),
            json!({ bob.user_id.clone(): [dm.clone()] }),
        )
        .await;
    let invite_room = bob.create_room(json!({})).await;
    bob.invite(&invite_room, &alice.user_id).await;
    // An invite marked `is_direct` is a direct chat before any `m.direct` names it.
    let direct_invite = bob
        .create_room(json!({ "is_direct": true, "invite": [alice.user_id.clone()] }))
        .await;

    let list =
        |filters: Value| json!({ "ranges": [[0, 9]], "timeline_limit": 1, "filters": filters });
    let body = json!({ "lists": {
        "dms": list(json!({ "is_dm": true })),
        "invites": list(json!({ "is_invite": true })),
        "spaces": list(json!({ "room_types": ["m.space"] })),
        "plain": list(json!({ "not_room_types": ["m.space"], "is_dm": false, "is_invite": false })),
        "any": list(json!({ "room_types": [] })),
    }});
    let resp = sliding(&alice, None, &body).await;
    assert_eq!(resp["lists"]["dms"]["count"], 2, "{resp}");
    assert_eq!(resp["lists"]["invites"]["count"], 2, "{resp}");
    assert_eq!(
        resp["lists"]["any"]["count"], 5,
        "an empty list does not filter: {resp}"
    );
    assert_eq!(resp["rooms"][&direct_invite]["is_dm"], true, "{resp}");
    assert_eq!(resp["lists"]["spaces"]["count"], 1, "{resp}");
    assert_eq!(resp["lists"]["plain"]["count"], 1, "{resp}");
    assert_eq!(resp["rooms"][&dm]["is_dm"], true);
    assert_eq!(resp["rooms"][&plain]["is_dm"], false);
    assert!(resp["rooms"].get(&space).is_some());
    let invite = &resp["rooms"][&invite_room];
    let state = invite["invite_state"].as_array().expect("invite_state");
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id
            && e["content"]["membership"] == "invite"),
        "{invite}"
    );
    assert!(invite.get("timeline").is_none(), "{invite}");
}

#[tokio::test]
async fn extensions_to_device_and_e2ee() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let body = |since: Option<&str>| {
        let mut to_device = json!({ "enabled": true });
        if let Some(s) = since {
            to_device["since"] = json!(s);
        }
        json!({ "extensions": { "to_device": to_device, "e2ee": { "enabled": true } } })
    };
    let resp = sliding(&alice, None, &body(None)).await;
    let e2ee = &resp["extensions"]["e2ee"];
    assert_eq!(
        e2ee["device_one_time_keys_count"]["signed_curve25519"], 0,
        "{resp}"
    );
    let since = resp["extensions"]["to_device"]["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    bob.send_to_device(
        "m.test",
        json!({ alice.user_id.clone(): { alice.device_id.clone(): { "n": 1 } } }),
    )
    .await;
    let got = sliding_until(&alice, &pos_of(&resp), &body(Some(&since)), |r| {
        r["extensions"]["to_device"]["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    let events = got["extensions"]["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"], json!({ "n": 1 }));
    assert_eq!(events[0]["sender"], bob.user_id);

    // Acknowledged by the next `since`: not delivered again.
    let next = got["extensions"]["to_device"]["next_batch"]
        .as_str()
        .unwrap();
    let again = sliding(&alice, None, &body(Some(next))).await;
    assert!(
        again["extensions"]["to_device"]["events"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{again}"
    );
}

#[tokio::test]
async fn extension_e2ee_reports_device_list_changes() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let body = json!({ "extensions": { "e2ee": { "enabled": true } } });
    let resp = sliding(&alice, None, &body).await;

    // Bob joining is a device-list change for Alice (they now share a room).
    let bob = node.register("bob").await;
    bob.join(&room).await;
    let got = sliding_until(&alice, &pos_of(&resp), &body, |r| {
        r["extensions"]["e2ee"]["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == &bob.user_id))
    })
    .await;
    assert!(got["extensions"]["e2ee"]["device_one_time_keys_count"].is_object());
}

#[tokio::test]
async fn extensions_account_data_receipts_and_typing() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let msg = bob.send_text(&room, "hello").await;
    let body = json!({
        "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1 } },
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true },
            "typing": { "enabled": true },
        }
    });
    let resp = sliding(&alice, None, &body).await;
    let pos = pos_of(&resp);

    alice
        .put_ok(
            &format!(
                "/user/{}/account_data/org.example.global",
                enc(&alice.user_id)
            ),
            json!({ "g": 1 }),
        )
        .await;
    alice
        .put_ok(
            &format!(
                "/user/{}/rooms/{}/account_data/org.example.room",
                enc(&alice.user_id),
                enc(&room)
            ),
            json!({ "r": 1 }),
        )
        .await;
    let got = sliding_until(&alice, &pos, &body, |r| {
        let ext = &r["extensions"]["account_data"];
        ext["global"]
            .as_array()
            .is_some_and(|g| g.iter().any(|e| e["type"] == "org.example.global"))
            && ext["rooms"][&room]
                .as_array()
                .is_some_and(|g| g.iter().any(|e| e["content"]["r"] == 1))
    })
    .await;
    let pos = pos_of(&got);

    bob.post_ok(
        &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&msg)),
        json!({}),
    )
    .await;
    let got = sliding_until(&alice, &pos, &body, |r| {
        r["extensions"]["receipts"]["rooms"][&room]["content"][&msg]["m.read"][&bob.user_id]
            .is_object()
    })
    .await;
    let pos = pos_of(&got);

    bob.put_ok(
        &format!("/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id)),
        json!({ "typing": true, "timeout": 30000 }),
    )
    .await;
    let got = sliding_until(&alice, &pos, &body, |r| {
        r["extensions"]["typing"]["rooms"][&room]["content"]["user_ids"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u == &bob.user_id))
    })
    .await;
    assert_eq!(
        got["extensions"]["typing"]["rooms"][&room]["type"],
        "m.typing"
    );
}

#[tokio::test]
async fn unknown_positions_are_refused() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let body = json!({ "conn_id": "main" });
    let resp = sliding(&alice, None, &body).await;
    let pos = pos_of(&resp);

    assert_error(
        &request(&alice, Some("999999"), 0, &body).await,
        400,
        "M_UNKNOWN_POS",
    );
    assert_error(
        &request(&alice, Some("not a pos"), 0, &body).await,
        400,
        "M_UNKNOWN_POS",
    );
    // A position belongs to its connection and its device.
    let other_conn = json!({ "conn_id": "other" });
    assert_error(
        &request(&alice, Some(&pos), 0, &other_conn).await,
        400,
        "M_UNKNOWN_POS",
    );
    assert_error(
        &request(&bob, Some(&pos), 0, &body).await,
        400,
        "M_UNKNOWN_POS",
    );
    // The connection itself still works.
    assert_eq!(
        request(&alice, Some(&pos), 0, &body).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_connection_resumes_after_the_node_restarts() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "name": "kept" })).await;
    alice.send_text(&room, "before").await;
    let body = all_rooms_list(9, 5);
    let resp = sliding(&alice, None, &body).await;
    assert_eq!(bodies(&resp["rooms"][&room]), vec!["before"]);
    let pos = pos_of(&resp);

    let dir = node.stop().await;
    let node = TestNode::start_in(dir, |_| {}).await;
    let alice = login_on_device(&node, "alice", PASSWORD, &alice.device_id).await;
    alice.send_text(&room, "after").await;
    let got = sliding_until(&alice, &pos, &body, |r| r["rooms"].get(&room).is_some()).await;
    let r = &got["rooms"][&room];
    assert!(r.get("initial").is_none(), "the client holds the room: {r}");
    assert_eq!(bodies(r), vec!["after"]);
}

#[tokio::test]
async fn a_long_poll_wakes_on_a_new_message() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let body = all_rooms_list(9, 5);
    let pos = pos_of(&sliding(&alice, None, &body).await);

    // Nothing new: the poll waits out its timeout and keeps the position.
    let started = Instant::now();
    let (status, idle) = request(&alice, Some(&pos), 300, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300), "{idle}");
    assert_eq!(pos_of(&idle), pos);
    assert!(room_ids(&idle).is_empty(), "{idle}");

    let waiter = {
        let alice = alice.clone();
        let (body, pos) = (body.clone(), pos.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = request(&alice, Some(&pos), 15_000, &body).await;
            (started.elapsed(), resp)
        })
    };
    bob.send_text(&room, "wake up").await;
    let (elapsed, (status, resp)) = waiter.await.expect("poll task");
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(
        elapsed < Duration::from_secs(10),
        "the poll did not wake: {elapsed:?}"
    );
    assert_eq!(bodies(&resp["rooms"][&room]), vec!["wake up"]);
}

#[tokio::test]
async fn a_left_room_shows_the_leave_once() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let body = all_rooms_list(9, 5);
    let resp = sliding(&bob, None, &body).await;
    assert_eq!(resp["lists"]["all"]["count"], 1);
    bob.leave(&room).await;
    let got = sliding_until(&bob, &pos_of(&resp), &body, |r| {
        r["rooms"].get(&room).is_some()
    })
    .await;
    let timeline = got["rooms"][&room]["timeline"]
        .as_array()
        .expect("timeline");
    assert!(
        timeline
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave"),
        "{got}"
    );
}

#[tokio::test]
async fn a_retried_position_gets_the_lost_response_again() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let body = all_rooms_list(9, 5);
    let first = pos_of(&sliding(&alice, None, &body).await);
    alice.send_text(&room, "maybe lost").await;
    let lost = sliding_until(&alice, &first, &body, |r| r["rooms"].get(&room).is_some()).await;
    assert_eq!(bodies(&lost["rooms"][&room]), vec!["maybe lost"]);

    // The client never saw that response and asks again from its older position.
    let again = sliding_until(&alice, &first, &body, |r| r["rooms"].get(&room).is_some()).await;
    let r = &again["rooms"][&room];
    assert_eq!(bodies(r), vec!["maybe lost"], "{again}");
    assert!(r.get("initial").is_none(), "{r}");
    // The position of the lost response is gone.
    assert_error(
        &request(&alice, Some(&pos_of(&lost)), 0, &body).await,
        400,
        "M_UNKNOWN_POS",
    );
}

#[tokio::test]
async fn a_joined_invite_comes_whole() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = bob.create_room(json!({ "name": "come in" })).await;
    bob.send_text(&room, "history").await;
    bob.invite(&room, &alice.user_id).await;
    let body = all_rooms_list(9, 5);
    let resp = sliding(&alice, None, &body).await;
    assert!(resp["rooms"][&room]["invite_state"].is_array(), "{resp}");

    alice.join(&room).await;
    let got = sliding_until(&alice, &pos_of(&resp), &body, |r| {
        r["rooms"][&room]["timeline"].is_array()
    })
    .await;
    let r = &got["rooms"][&room];
    assert_eq!(r["initial"], true, "{r}");
    assert!(bodies(r).contains(&"history".to_owned()), "{r}");
    assert_eq!(state_keys(r, "m.room.name"), vec![""]);
    assert_eq!(r["joined_count"], 2);
}

#[tokio::test]
async fn parameters_left_out_carry_over_on_the_connection() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let first_invite = bob.create_room(json!({ "name": "one" })).await;
    bob.invite(&first_invite, &alice.user_id).await;
    alice.create_room(json!({})).await;
    let full = json!({
        "lists": { "invites": {
            "ranges": [[0, 9]],
            "timeline_limit": 1,
            "required_state": [["m.room.name", ""]],
            "filters": { "is_invite": true },
        }},
        "extensions": { "to_device": { "enabled": true } },
    });
    let resp = sliding(&alice, None, &full).await;
    assert_eq!(resp["lists"]["invites"]["count"], 1, "{resp}");

    // An older client leaves out what it sent before: the filter and the extension still apply.
    let second_invite = bob.create_room(json!({ "name": "two" })).await;
    bob.invite(&second_invite, &alice.user_id).await;
    bob.send_to_device(
        "m.test",
        json!({ alice.user_id.clone(): { alice.device_id.clone(): { "n": 2 } } }),
    )
    .await;
    let short = json!({ "lists": { "invites": { "ranges": [[0, 9]] } } });
    let got = sliding_until(&alice, &pos_of(&resp), &short, |r| {
        r["rooms"].get(&second_invite).is_some()
            && r["extensions"]["to_device"]["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
    })
    .await;
    assert_eq!(
        got["lists"]["invites"]["count"], 2,
        "still only invites: {got}"
    );
}

/// Rooms carry the unread counts of push-rule evaluation (a mention highlights) and events
/// carry their bundled edits, as in `/sync`.
#[tokio::test]
async fn rooms_carry_unread_counts_and_bundled_edits() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let original = alice.send_text(&room, "helo").await;
    alice
        .put_ok(
            &format!("/rooms/{}/send/m.room.message/edit1", enc(&room)),
            json!({
                "msgtype": "m.text",
                "body": "* hello",
                "m.new_content": { "msgtype": "m.text", "body": "hello" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": original },
            }),
        )
        .await;
    alice
        .put_ok(
            &format!("/rooms/{}/send/m.room.message/mention1", enc(&room)),
            json!({
                "msgtype": "m.text",
                "body": "bob: look",
                "m.mentions": { "user_ids": [bob.user_id] },
            }),
        )
        .await;
    let body = json!({ "room_subscriptions": { room.clone(): { "timeline_limit": 10 } } });
    let resp = sliding(&bob, None, &body).await;
    let r = &resp["rooms"][&room];
    // The edit does not notify (`.m.rule.suppress_edits`): the message and the mention do.
    assert_eq!(r["notification_count"], 2, "{r}");
    assert_eq!(r["highlight_count"], 1, "{r}");
    let original_event = r["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .find(|e| e["event_id"] == original.as_str())
        .expect("original in timeline");
    assert_eq!(
        original_event["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"],
        "hello",
        "{original_event}"
    );
}

/// The user's own read receipt resets a room's unread counts: the room goes out again with
/// them, while another member's receipt only travels in the receipts extension.
#[tokio::test]
async fn an_own_read_receipt_sends_the_room_again_with_its_counts() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let message = alice.send_text(&room, "read me").await;
    let body = json!({
        "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1 } },
        "extensions": { "receipts": { "enabled": true } },
    });
    let first = sliding(&bob, None, &body).await;
    assert_eq!(first["rooms"][&room]["notification_count"], 1, "{first}");
    let receipt = format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&message));
    let (status, resp) = bob.post(&receipt, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let next = sliding_until(&bob, &pos_of(&first), &body, |r| {
        r["rooms"].get(&room).is_some()
    })
    .await;
    assert_eq!(next["rooms"][&room]["notification_count"], 0, "{next}");
    assert!(
        next["extensions"]["receipts"]["rooms"].get(&room).is_some(),
        "{next}"
    );
    // Alice's receipt is news for Bob's receipts extension, not for his room list.
    let (status, resp) = alice.post(&receipt, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let after = sliding_until(&bob, &pos_of(&next), &body, |r| {
        r["extensions"]["receipts"]["rooms"].get(&room).is_some()
    })
    .await;
    assert!(after["rooms"].get(&room).is_none(), "{after}");
}
