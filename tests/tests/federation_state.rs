//! Room history for other servers: `/state`, `/state_ids` and `/backfill`, asked by one node
//! of the other with signed requests over the peer-to-peer transport.

use neurite_core::federation::transport::Response;
use neurite_tests::{TestNode, enc};
use reqwest::Method;
use serde_json::{Value, json};

/// A signed federation GET from `from` to `to`.
async fn fed_get(from: &TestNode, to: &TestNode, path: &str) -> Response {
    from.node()
        .services()
        .federation()
        .expect("federation running")
        .request(&to.server_name(), Method::GET, path, None)
        .await
        .expect("request delivered")
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn state_and_backfill_for_a_server_in_the_room() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "name": "History" }))
        .await;
    let m1 = alice.send_text(&room, "one").await;
    let m2 = alice.send_text(&room, "two").await;
    let m3 = alice.send_text(&room, "three").await;
    let state_path = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={}",
        enc(&room),
        enc(&m3)
    );

    // B has never had a member in the room: refused.
    let r = fed_get(&b, &a, &state_path).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["errcode"], "M_FORBIDDEN");
    let backfill_path = format!(
        "/_matrix/federation/v1/backfill/{}?v={}&limit=3",
        enc(&room),
        enc(&m3)
    );
    assert_eq!(fed_get(&b, &a, &backfill_path).await.status, 403);

    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    bob.join(&room).await;

    // The state before m3: the room's state events, with their auth chain.
    let r = fed_get(&b, &a, &state_path).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let pdu_ids = ids(&r.body["pdu_ids"]);
    let chain = ids(&r.body["auth_chain_ids"]);
    let current = alice.get_ok(&format!("/rooms/{}/state", enc(&room))).await;
    let name_event = current
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(pdu_ids.contains(&name_event), "{pdu_ids:?}");
    assert!(!pdu_ids.contains(&m3), "a message is not state");
    assert!(!chain.is_empty());
    assert!(
        chain.iter().all(|id| pdu_ids.contains(id)),
        "the auth chain of the room's state lies within it here"
    );
    // Bob's join came after m3: not in the state before it.
    let bob_join = current
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state_key"] == bob.user_id.as_str())
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!pdu_ids.contains(&bob_join));

    let full = fed_get(
        &b,
        &a,
        &format!(
            "/_matrix/federation/v1/state/{}?event_id={}",
            enc(&room),
            enc(&m3)
        ),
    )
    .await;
    assert_eq!(full.status, 200, "{:?}", full.body);
    assert_eq!(full.body["pdus"].as_array().unwrap().len(), pdu_ids.len());
    assert_eq!(
        full.body["auth_chain"].as_array().unwrap().len(),
        chain.len()
    );
    assert!(
        full.body["pdus"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["type"] == "m.room.name" && p["content"]["name"] == "History")
    );

    // Backfill walks back from m3, newest first.
    let r = fed_get(&b, &a, &backfill_path).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let bodies: Vec<&Value> = r.body["pdus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["content"]["body"])
        .collect();
    assert_eq!(bodies, [&json!("three"), &json!("two"), &json!("one")]);
    let _ = (m1, m2);

    // Bad requests.
    let r = fed_get(
        &b,
        &a,
        &format!("/_matrix/federation/v1/backfill/{}?limit=3", enc(&room)),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), &r.body["errcode"]),
        (400, &json!("M_MISSING_PARAM"))
    );
    let r = fed_get(
        &b,
        &a,
        &format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            enc(&room),
            enc("$nope")
        ),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), &r.body["errcode"]),
        (404, &json!("M_NOT_FOUND"))
    );
}

#[tokio::test]
async fn history_hidden_by_visibility_goes_out_redacted() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice
        .send_state(
            &room,
            "m.room.history_visibility",
            "",
            json!({ "history_visibility": "joined" }),
        )
        .await;
    let secret = alice.send_text(&room, "before bob").await;
    alice.invite(&room, &bob.user_id).await;
    bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
        .await;
    bob.join(&room).await;
    let after = alice.send_text(&room, "after bob").await;

    let r = fed_get(
        &b,
        &a,
        &format!(
            "/_matrix/federation/v1/backfill/{}?v={}&limit=20",
            enc(&room),
            enc(&after)
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let pdus = r.body["pdus"].as_array().unwrap();
    let find = |body: &str| pdus.iter().find(|p| p["content"]["body"] == body).cloned();
    assert!(find("after bob").is_some(), "{pdus:?}");
    assert!(find("before bob").is_none(), "hidden: {pdus:?}");
    // The hidden message is still there, redacted, so the graph has no hole.
    let redacted = pdus
        .iter()
        .filter(|p| p["type"] == "m.room.message")
        .count();
    assert_eq!(redacted, 2, "{pdus:?}");

    let r = fed_get(
        &b,
        &a,
        &format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            enc(&room),
            enc(&secret)
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
}
