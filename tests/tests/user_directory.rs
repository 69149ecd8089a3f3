//! `POST /user_directory/search`: local users sharing a room with the searcher or in a
//! public room, matched by user id and display name.

use neurite_tests::{TestNode, User, assert_error, enc};
use reqwest::Method;
use serde_json::{Value, json};

async fn search(user: &User, term: &str) -> Value {
    user.post_ok("/user_directory/search", json!({ "search_term": term }))
        .await
}

fn ids(resp: &Value) -> Vec<String> {
    resp["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["user_id"].as_str().expect("user_id").to_owned())
        .collect()
}

#[tokio::test]
async fn directory_shows_room_mates_and_members_of_public_rooms() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    let _dave = node.register("dave").await;
    let eve = node.register("eve").await;

    let private = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&private, &bob.user_id).await;
    bob.join(&private).await;
    carol.create_room(json!({ "preset": "public_chat" })).await;
    eve.create_room(json!({ "preset": "private_chat" })).await;

    assert_eq!(ids(&search(&alice, "bo").await), vec![bob.user_id.clone()]);
    assert_eq!(
        ids(&search(&alice, "CAR").await),
        vec![carol.user_id.clone()]
    );
    // Dave is in no room, Eve only in a private room of her own.
    assert!(ids(&search(&alice, "dave").await).is_empty());
    assert!(ids(&search(&alice, "eve").await).is_empty());
    // A full user id finds its user.
    assert_eq!(
        ids(&search(&alice, &bob.user_id).await),
        vec![bob.user_id.clone()]
    );
    let resp = search(&alice, "bob").await;
    assert_eq!(resp["limited"], false);
    assert!(resp["results"][0].get("display_name").is_some());
}

#[tokio::test]
async fn display_names_match_by_word_prefix() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    bob.put_ok(
        &format!("/profile/{}/displayname", enc(&bob.user_id)),
        json!({ "displayname": "Robert Builder" }),
    )
    .await;
    bob.put_ok(
        &format!("/profile/{}/avatar_url", enc(&bob.user_id)),
        json!({ "avatar_url": "mxc://example/abc" }),
    )
    .await;
    for term in ["build", "ROB", "robert bu", "bob"] {
        let resp = search(&alice, term).await;
        assert_eq!(ids(&resp), vec![bob.user_id.clone()], "term {term}");
        assert_eq!(resp["results"][0]["display_name"], "Robert Builder");
        assert_eq!(resp["results"][0]["avatar_url"], "mxc://example/abc");
    }
    // Words must start the same way; inner substrings do not match.
    assert!(ids(&search(&alice, "uilder").await).is_empty());
    assert!(ids(&search(&alice, "robert xavier").await).is_empty());
}

#[tokio::test]
async fn limit_cuts_results_and_says_so() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    for name in ["sam1", "sam2", "sam3"] {
        node.register(name).await.join(&room).await;
    }
    let resp = alice
        .post_ok(
            "/user_directory/search",
            json!({ "search_term": "sam", "limit": 2 }),
        )
        .await;
    assert_eq!(ids(&resp).len(), 2);
    assert_eq!(resp["limited"], true);
    let resp = search(&alice, "sam").await;
    assert_eq!(ids(&resp).len(), 3);
    assert_eq!(resp["limited"], false);
}

#[tokio::test]
async fn bad_directory_searches_get_matrix_errors() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    assert_error(
        &alice.post("/user_directory/search", json!({})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice
            .post(
                "/user_directory/search",
                json!({ "search_term": "a", "limit": "ten" }),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice
            .post(
                "/user_directory/search",
                json!({ "search_term": "a", "limit": -1 }),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    let (s, body) = node
        .request(
            Method::POST,
            "/_matrix/client/v3/user_directory/search",
            None,
            Some(json!({ "search_term": "a" })),
        )
        .await;
    assert_error(&(s, body), 401, "M_MISSING_TOKEN");
    // A term with no letters or digits finds nobody rather than everybody.
    assert!(ids(&search(&alice, "@:").await).is_empty());
}
