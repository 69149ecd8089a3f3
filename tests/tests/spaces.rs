//! Room summaries (MSC3266: the stable path and both `im.nheko.summary` paths) and space
//! hierarchies (`/v1/rooms/{roomId}/hierarchy`): what a user may see of rooms they are not
//! in, the walk's depth, suggested children, and its pages.

use neurite_tests::{TestNode, User, assert_error, enc};
use serde_json::{Value, json};

fn summary_paths(room: &str) -> [String; 3] {
    let r = enc(room);
    [
        format!("/_matrix/client/v1/room_summary/{r}"),
        format!("/_matrix/client/unstable/im.nheko.summary/summary/{r}"),
        format!("/_matrix/client/unstable/im.nheko.summary/rooms/{r}/summary"),
    ]
}

#[tokio::test]
async fn room_summaries_show_what_the_caller_may_see() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let public = alice
        .create_room(json!({
            "preset": "public_chat",
            "name": "Town square",
            "topic": "Everyone welcome",
            "room_alias_name": "square",
        }))
        .await;
    for path in summary_paths(&public) {
        let s = bob.get_ok(&path).await;
        assert_eq!(s["room_id"], public.as_str(), "{path}: {s}");
        assert_eq!(s["name"], "Town square");
        assert_eq!(s["topic"], "Everyone welcome");
        assert_eq!(s["join_rule"], "public");
        assert_eq!(s["num_joined_members"], 1);
        assert_eq!(s["world_readable"], false);
        assert_eq!(s["room_version"], "12");
        assert!(s.get("membership").is_none(), "bob is not in it: {s}");
    }
    // By alias, and without a token.
    let alias = format!("#square:{}", node.server_name());
    let s = bob
        .get_ok(&format!("/_matrix/client/v1/room_summary/{}", enc(&alias)))
        .await;
    assert_eq!(s["room_id"], public.as_str());
    assert_eq!(s["canonical_alias"], alias.as_str());
    let (status, anonymous) = node
        .request(reqwest::Method::GET, &summary_paths(&public)[0], None, None)
        .await;
    assert_eq!(status, 200, "{anonymous}");
    assert_eq!(anonymous["name"], "Town square");
    assert_eq!(
        alice.get_ok(&summary_paths(&public)[0]).await["membership"],
        "join"
    );

    // An invite-only room is hidden until Bob is invited.
    let private = alice
        .create_room(json!({ "name": "Back office", "preset": "private_chat" }))
        .await;
    for path in summary_paths(&private) {
        assert_error(&bob.get(&path).await, 404, "M_NOT_FOUND");
    }
    alice.invite(&private, &bob.user_id).await;
    let s = bob.get_ok(&summary_paths(&private)[0]).await;
    assert_eq!(s["name"], "Back office");
    assert_eq!(s["join_rule"], "invite");
    assert_eq!(s["membership"], "invite");

    let unknown = format!("!nowhere:{}", node.server_name());
    assert_error(
        &bob.get(&summary_paths(&unknown)[0]).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.get("/_matrix/client/v1/room_summary/not-a-room").await,
        400,
        "M_INVALID_PARAM",
    );
}

/// Adds `child` to `space` (joined through `alice`'s server) with the given `order` and
/// `suggested` flag.
async fn add_child(alice: &User, space: &str, child: &str, order: &str, suggested: bool) {
    let via = [alice.user_id.split_once(':').expect("user id").1];
    alice
        .send_state(
            space,
            "m.space.child",
            child,
            json!({ "via": via, "order": order, "suggested": suggested }),
        )
        .await;
}

fn ids(page: &Value) -> Vec<&str> {
    page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_id"].as_str().expect("room_id"))
        .collect()
}

#[tokio::test]
async fn hierarchies_walk_the_rooms_a_user_may_see() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let space_of = |name: &str| {
        json!({
            "preset": "public_chat",
            "name": name,
            "creation_content": { "type": "m.space" },
        })
    };
    let space = alice.create_room(space_of("Space")).await;
    let lobby = alice
        .create_room(json!({ "preset": "public_chat", "name": "Lobby" }))
        .await;
    let secret = alice
        .create_room(json!({ "preset": "private_chat", "name": "Secret" }))
        .await;
    let sub = alice.create_room(space_of("Subspace")).await;
    let deep = alice
        .create_room(json!({ "preset": "public_chat", "name": "Deep" }))
        .await;
    add_child(&alice, &space, &lobby, "a", true).await;
    add_child(&alice, &space, &sub, "b", false).await;
    add_child(&alice, &space, &secret, "c", true).await;
    add_child(&alice, &sub, &deep, "a", false).await;
    // A child this server does not hold, and one without servers to join through.
    add_child(&alice, &space, "!elsewhere", "d", false).await;
    alice
        .send_state(&space, "m.space.child", &deep, json!({ "via": [] }))
        .await;
    let path = |query: &str| format!("/_matrix/client/v1/rooms/{}/hierarchy{query}", enc(&space));

    // Bob sees the public rooms, breadth first, in the children's order; not the secret one.
    let all = bob.get_ok(&path("")).await;
    assert_eq!(
        ids(&all),
        [space.as_str(), lobby.as_str(), sub.as_str(), deep.as_str()],
        "{all}"
    );
    assert!(all.get("next_batch").is_none(), "{all}");
    let root = &all["rooms"][0];
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["name"], "Space");
    let children: Vec<&str> = root["children_state"]
        .as_array()
        .expect("children_state")
        .iter()
        .map(|c| c["state_key"].as_str().unwrap())
        .collect();
    assert!(children.contains(&lobby.as_str()) && children.contains(&secret.as_str()));
    assert!(
        !children.contains(&deep.as_str()),
        "a child without via is no child: {children:?}"
    );
    assert!(
        root["children_state"][0]["origin_server_ts"].is_i64(),
        "{root}"
    );
    // Alice, a member of everything, sees the secret room too.
    assert_eq!(
        ids(&alice.get_ok(&path("")).await),
        [
            space.as_str(),
            lobby.as_str(),
            sub.as_str(),
            secret.as_str(),
            deep.as_str()
        ]
    );

    assert_eq!(
        ids(&bob.get_ok(&path("?max_depth=1")).await),
        [space.as_str(), lobby.as_str(), sub.as_str()]
    );
    assert_eq!(
        ids(&bob.get_ok(&path("?max_depth=0")).await),
        [space.as_str()]
    );
    assert_eq!(
        ids(&bob.get_ok(&path("?suggested_only=true")).await),
        [space.as_str(), lobby.as_str()]
    );

    // Pages of two, then the rest.
    let first = bob.get_ok(&path("?limit=2")).await;
    assert_eq!(ids(&first), [space.as_str(), lobby.as_str()]);
    let next = first["next_batch"].as_str().expect("next_batch");
    let second = bob
        .get_ok(&path(&format!("?limit=2&from={}", enc(next))))
        .await;
    assert_eq!(ids(&second), [sub.as_str(), deep.as_str()]);
    assert!(second.get("next_batch").is_none(), "{second}");

    // A private space is closed to Bob; bad parameters are refused.
    let closed = alice
        .create_room(json!({ "preset": "private_chat", "creation_content": { "type": "m.space" } }))
        .await;
    assert_error(
        &bob.get(&format!(
            "/_matrix/client/v1/rooms/{}/hierarchy",
            enc(&closed)
        ))
        .await,
        403,
        "M_FORBIDDEN",
    );
    for bad in [
        "?limit=-1",
        "?limit=0",
        "?max_depth=deep",
        "?suggested_only=yes",
        "?from=garbage",
    ] {
        assert_error(&bob.get(&path(bad)).await, 400, "M_INVALID_PARAM");
    }
    let unknown = format!("!nowhere:{}", node.server_name());
    assert_error(
        &bob.get(&format!(
            "/_matrix/client/v1/rooms/{}/hierarchy",
            enc(&unknown)
        ))
        .await,
        404,
        "M_NOT_FOUND",
    );
}
