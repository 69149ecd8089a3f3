//! Relations: `/relations`, `/threads`, and the aggregations bundled under
//! `unsigned.m.relations` wherever events are served.
//!
//! Ports of these Complement client-server scenarios (matrix-org/complement, tests/csapi),
//! rewritten against Neurite's test harness:
//!
//! - `TestRelations` (room_relations_test.go).
//! - `TestRelationsPagination` (room_relations_test.go).
//! - `TestRelationsPaginationSync` (room_relations_test.go). Complement's version re-sends its
//!   second batch with the first batch's transaction ids (so both batches are the same events);
//!   here the second batch is new, which also shows that `to` stops the page.
//! - `TestThreadsEndpoint` (room_threads_test.go).
//!
//! Beyond those: the `m.replace`, `m.thread` and `m.reference` aggregations in `/sync`,
//! `/messages`, `/context`, `/event`, `/relations` and `/threads`; invalid edits (another
//! sender, no `m.new_content`) and redacted edits left out; a redacted original bundling no
//! edit; aggregations limited to what the reader may see; `recurse`; `include=participated`
//! and pagination of `/threads`; and bad parameters answered with Matrix errors.

use neurite_tests::{
    TestNode, User, assert_error, enc, event_ids, has_event, next_batch, query, timeline,
};
use serde_json::{Value, json};

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

fn relates(mut content: Value, rel_type: &str, target: &str) -> Value {
    content["m.relates_to"] = json!({ "rel_type": rel_type, "event_id": target });
    content
}

async fn thread_reply(user: &User, room: &str, root: &str, body: &str) -> String {
    user.send_event(
        room,
        "m.room.message",
        relates(text(body), "m.thread", root),
    )
    .await
}

async fn edit(user: &User, room: &str, target: &str, body: &str) -> String {
    let mut content = text(&format!("* {body}"));
    content["m.new_content"] = text(body);
    user.send_event(
        room,
        "m.room.message",
        relates(content, "m.replace", target),
    )
    .await
}

fn relations_path(room: &str, event: &str, rest: &str, pairs: &[(&str, &str)]) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/relations/{}{rest}{}",
        enc(room),
        enc(event),
        query(pairs)
    )
}

fn threads_path(room: &str, pairs: &[(&str, &str)]) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/threads{}",
        enc(room),
        query(pairs)
    )
}

async fn get_event(user: &User, room: &str, id: &str) -> Value {
    user.get_ok(&format!("/rooms/{}/event/{}", enc(room), enc(id)))
        .await
}

/// The bundled aggregations of an event (`null` when it has none).
fn bundle(ev: &Value) -> &Value {
    &ev["unsigned"]["m.relations"]
}

fn find<'a>(events: &'a Value, id: &str) -> &'a Value {
    events
        .as_array()
        .and_then(|a| a.iter().find(|e| e["event_id"] == id))
        .unwrap_or_else(|| panic!("{id} not in {events}"))
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn strings(ids: &[&String]) -> Vec<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

/// A node, Alice, and a public room she created, with Alice's sync token after creating it.
async fn alice_in_a_room() -> (TestNode, User, String, String) {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let token = next_batch(&alice.sync(None, 0).await);
    (node, alice, room, token)
}

// ---------------------------------------------------------------------------------------------
// Complement ports
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn relations_are_listed_by_relation_and_event_type() {
    let (_node, alice, room, token) = alice_in_a_room().await;
    let root = alice.send_text(&room, "root").await;
    let reply = thread_reply(&alice, &room, &root, "reply").await;
    let dummy = alice
        .send_event(&room, "m.dummy", relates(json!({}), "m.thread", &root))
        .await;
    let edited = edit(&alice, &room, &root, "edited root").await;
    alice
        .sync_until(Some(&token), |s| has_event(s, &room, &edited))
        .await;

    let all = alice.get_ok(&relations_path(&room, &root, "", &[])).await;
    assert_eq!(
        sorted(event_ids(&all["chunk"])),
        sorted(strings(&[&reply, &dummy, &edited]))
    );
    let threads = alice
        .get_ok(&relations_path(&room, &root, "/m.thread", &[]))
        .await;
    assert_eq!(
        sorted(event_ids(&threads["chunk"])),
        sorted(strings(&[&reply, &dummy]))
    );
    let messages = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "/m.thread/m.room.message",
            &[],
        ))
        .await;
    assert_eq!(event_ids(&messages["chunk"]), vec![reply]);
    // Without `recurse` there is no `recursion_depth`; the first page has no `prev_batch`.
    assert!(all.get("recursion_depth").is_none(), "{all}");
    assert!(all.get("prev_batch").is_none(), "{all}");
}

#[tokio::test]
async fn relations_paginate_in_both_directions() {
    let (_node, alice, room, token) = alice_in_a_room().await;
    let root = alice.send_text(&room, "root").await;
    let mut replies = Vec::new();
    for i in 0..10 {
        replies.push(thread_reply(&alice, &room, &root, &format!("reply {i}")).await);
    }
    alice
        .sync_until(Some(&token), |s| has_event(s, &room, &replies[9]))
        .await;

    let page1 = alice
        .get_ok(&relations_path(&room, &root, "", &[("limit", "3")]))
        .await;
    assert_eq!(
        event_ids(&page1["chunk"]),
        replies[7..10].iter().rev().cloned().collect::<Vec<_>>()
    );
    let next = page1["next_batch"].as_str().expect("next_batch");
    let page2 = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "",
            &[("limit", "3"), ("from", next)],
        ))
        .await;
    assert_eq!(
        event_ids(&page2["chunk"]),
        replies[4..7].iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(page2["prev_batch"], next, "{page2}");

    let fwd1 = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "",
            &[("limit", "3"), ("dir", "f")],
        ))
        .await;
    assert_eq!(event_ids(&fwd1["chunk"]), replies[0..3].to_vec());
    let next = fwd1["next_batch"].as_str().expect("next_batch");
    let fwd2 = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "",
            &[("limit", "3"), ("dir", "f"), ("from", next)],
        ))
        .await;
    assert_eq!(event_ids(&fwd2["chunk"]), replies[3..6].to_vec());

    // Paging on to the end visits every reply once and ends without `next_batch`.
    let mut seen = event_ids(&fwd1["chunk"]);
    seen.extend(event_ids(&fwd2["chunk"]));
    let mut from = fwd2["next_batch"].as_str().map(str::to_owned);
    while let Some(f) = from {
        let page = alice
            .get_ok(&relations_path(
                &room,
                &root,
                "",
                &[("limit", "3"), ("dir", "f"), ("from", &f)],
            ))
            .await;
        seen.extend(event_ids(&page["chunk"]));
        from = page["next_batch"].as_str().map(str::to_owned);
        assert!(seen.len() <= 10, "pagination does not end: {seen:?}");
    }
    assert_eq!(seen, replies);
}

#[tokio::test]
async fn relations_pagination_stops_at_a_sync_token() {
    let (_node, alice, room, token) = alice_in_a_room().await;
    let root = alice.send_text(&room, "root").await;
    let mut first = Vec::new();
    for i in 0..5 {
        first.push(thread_reply(&alice, &room, &root, &format!("reply {i}")).await);
    }
    let synced = alice
        .sync_until(Some(&token), |s| has_event(s, &room, &first[4]))
        .await;
    let sync_token = next_batch(&synced);
    let mut second = Vec::new();
    for i in 5..10 {
        second.push(thread_reply(&alice, &room, &root, &format!("reply {i}")).await);
    }
    alice
        .sync_until(Some(&sync_token), |s| has_event(s, &room, &second[4]))
        .await;

    // Forwards from the start up to the sync token: the replies sent before it.
    let page1 = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "",
            &[("limit", "3"), ("to", &sync_token), ("dir", "f")],
        ))
        .await;
    assert_eq!(event_ids(&page1["chunk"]), first[0..3].to_vec());
    let next = page1["next_batch"].as_str().expect("next_batch");
    let page2 = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "",
            &[
                ("limit", "3"),
                ("to", &sync_token),
                ("dir", "f"),
                ("from", next),
            ],
        ))
        .await;
    assert_eq!(event_ids(&page2["chunk"]), first[3..5].to_vec());
    assert!(page2.get("next_batch").is_none(), "{page2}");

    // Backwards from now down to the sync token: the replies sent after it.
    let newer = alice
        .get_ok(&relations_path(&room, &root, "", &[("to", &sync_token)]))
        .await;
    assert_eq!(
        event_ids(&newer["chunk"]),
        second.iter().rev().cloned().collect::<Vec<_>>()
    );
    // And from the sync token backwards: the older ones.
    let older = alice
        .get_ok(&relations_path(&room, &root, "", &[("from", &sync_token)]))
        .await;
    assert_eq!(
        event_ids(&older["chunk"]),
        first.iter().rev().cloned().collect::<Vec<_>>()
    );
}

/// `(root, latest reply)` of each thread in a `/threads` response, in order.
fn thread_keys(body: &Value) -> Vec<(String, String)> {
    body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|root| {
            (
                root["event_id"].as_str().unwrap_or_default().to_owned(),
                bundle(root)["m.thread"]["latest_event"]["event_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn threads_are_listed_by_latest_reply() {
    let (_node, alice, room, token) = alice_in_a_room().await;
    let thread1 = alice.send_text(&room, "Thread 1 Root").await;
    let thread2 = alice.send_text(&room, "Thread 2 Root").await;
    let reply1 = thread_reply(&alice, &room, &thread1, "Thread 1 Reply").await;
    let reply2 = thread_reply(&alice, &room, &thread2, "Thread 2 Reply").await;
    alice
        .sync_until(Some(&token), |s| has_event(s, &room, &reply2))
        .await;

    let body = alice.get_ok(&threads_path(&room, &[])).await;
    assert_eq!(
        thread_keys(&body),
        vec![
            (thread2.clone(), reply2.clone()),
            (thread1.clone(), reply1.clone())
        ]
    );
    assert!(body.get("next_batch").is_none(), "{body}");

    let reply3 = thread_reply(&alice, &room, &thread1, "Thread 1 Reply 2").await;
    alice
        .sync_until(Some(&token), |s| has_event(s, &room, &reply3))
        .await;
    let body = alice.get_ok(&threads_path(&room, &[])).await;
    assert_eq!(
        thread_keys(&body),
        vec![(thread1.clone(), reply3.clone()), (thread2, reply2)]
    );
    let summary = &bundle(&body["chunk"][0])["m.thread"];
    assert_eq!(summary["count"], 2, "{summary}");
    assert_eq!(summary["current_user_participated"], true, "{summary}");
}

// ---------------------------------------------------------------------------------------------
// /threads beyond Complement
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn threads_paginate_and_filter_by_participation() {
    let (node, alice, room, _) = alice_in_a_room().await;
    let bob = node.register("bob").await;
    bob.join(&room).await;
    let roots = [
        alice.send_text(&room, "a").await,
        alice.send_text(&room, "b").await,
        alice.send_text(&room, "c").await,
    ];
    // Oldest activity first: thread c, then a (by Bob), then b.
    thread_reply(&alice, &room, &roots[2], "in c").await;
    thread_reply(&bob, &room, &roots[0], "bob in a").await;
    thread_reply(&alice, &room, &roots[1], "in b").await;
    // A root that is only Bob's, with no thread, is no thread.
    bob.send_text(&room, "no thread here").await;

    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut pairs = vec![("limit", "1")];
        if let Some(f) = &from {
            pairs.push(("from", f.as_str()));
        }
        let page = bob.get_ok(&threads_path(&room, &pairs)).await;
        assert!(
            page["chunk"].as_array().expect("chunk").len() <= 1,
            "{page}"
        );
        seen.extend(event_ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(n) => from = Some(n.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 3, "pagination does not end: {seen:?}");
    }
    assert_eq!(
        seen,
        vec![roots[1].clone(), roots[0].clone(), roots[2].clone()]
    );

    let mine = bob
        .get_ok(&threads_path(&room, &[("include", "participated")]))
        .await;
    assert_eq!(event_ids(&mine["chunk"]), vec![roots[0].clone()]);
    assert_eq!(
        bundle(&mine["chunk"][0])["m.thread"]["current_user_participated"],
        true
    );
    let everything = bob
        .get_ok(&threads_path(&room, &[("include", "all")]))
        .await;
    let b_thread = find(&everything["chunk"], &roots[1]);
    assert_eq!(
        bundle(b_thread)["m.thread"]["current_user_participated"],
        false,
        "{b_thread}"
    );
    // Alice started every thread, so she took part in all of them.
    let alices = alice
        .get_ok(&threads_path(&room, &[("include", "participated")]))
        .await;
    assert_eq!(event_ids(&alices["chunk"]).len(), 3, "{alices}");
}

#[tokio::test]
async fn threads_rejects_outsiders_and_bad_parameters() {
    let (node, alice, room, _) = alice_in_a_room().await;
    let root = alice.send_text(&room, "root").await;
    thread_reply(&alice, &room, &root, "reply").await;
    let eve = node.register("eve").await;
    let private = alice.create_room(json!({ "preset": "private_chat" })).await;

    assert_error(
        &eve.get(&threads_path(&private, &[])).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &alice.get(&threads_path("!nowhere:example.org", &[])).await,
        403,
        "M_FORBIDDEN",
    );
    for pairs in [
        vec![("from", "not-a-token")],
        vec![("include", "some")],
        vec![("limit", "0")],
        vec![("limit", "-3")],
        vec![("limit", "many")],
    ] {
        let resp = alice.get(&threads_path(&room, &pairs)).await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    // A room without threads answers an empty chunk.
    let empty = alice.get_ok(&threads_path(&private, &[])).await;
    assert_eq!(empty["chunk"], json!([]));
    assert!(empty.get("next_batch").is_none(), "{empty}");
}

// ---------------------------------------------------------------------------------------------
// Bundled aggregations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn latest_edit_is_bundled_wherever_the_event_is_served() {
    let (_node, alice, room, _) = alice_in_a_room().await;
    let before = alice.send_text(&room, "before").await;
    let original = alice.send_text(&room, "original").await;
    let after = alice.send_text(&room, "after").await;
    edit(&alice, &room, &original, "first edit").await;
    // Timestamps have millisecond resolution and the spec breaks ties by event id: make the
    // second edit's timestamp strictly later, so "latest" means the second one.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let latest = edit(&alice, &room, &original, "second edit").await;

    let check = |ev: &Value, place: &str| {
        let replace = &bundle(ev)["m.replace"];
        assert_eq!(replace["event_id"], latest, "{place}: {ev}");
        // The whole replacement event, as spec v1.7 and matrix-js-sdk expect.
        assert_eq!(replace["type"], "m.room.message", "{place}");
        assert_eq!(replace["sender"], alice.user_id, "{place}");
        assert_eq!(replace["room_id"], room, "{place}");
        assert!(replace["origin_server_ts"].is_i64(), "{place}");
        assert_eq!(
            replace["content"]["m.new_content"]["body"], "second edit",
            "{place}"
        );
        // The original's own content stays as it was sent.
        assert_eq!(ev["content"]["body"], "original", "{place}");
    };

    let sync = alice.sync(None, 0).await;
    let synced = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["event_id"] == original)
        .expect("original in the timeline")
        .clone();
    check(&synced, "sync");

    let messages = alice.messages(&room, &[("limit", "20")]).await;
    check(find(&messages["chunk"], &original), "/messages");
    assert!(bundle(find(&messages["chunk"], &before)).is_null());

    check(&get_event(&alice, &room, &original).await, "/event");

    let context = alice
        .get_ok(&format!(
            "/rooms/{}/context/{}?limit=4",
            enc(&room),
            enc(&original)
        ))
        .await;
    check(&context["event"], "/context event");
    let context_of_after = alice
        .get_ok(&format!(
            "/rooms/{}/context/{}?limit=4",
            enc(&room),
            enc(&after)
        ))
        .await;
    check(
        find(&context_of_after["events_before"], &original),
        "/context events_before",
    );
    let context_of_before = alice
        .get_ok(&format!(
            "/rooms/{}/context/{}?limit=4",
            enc(&room),
            enc(&before)
        ))
        .await;
    check(
        find(&context_of_before["events_after"], &original),
        "/context events_after",
    );

    // Edits themselves carry no aggregation.
    assert!(bundle(&get_event(&alice, &room, &latest).await).is_null());
}

#[tokio::test]
async fn edits_by_another_sender_or_without_new_content_are_ignored() {
    let (node, alice, room, _) = alice_in_a_room().await;
    let bob = node.register("bob").await;
    bob.join(&room).await;
    let original = alice.send_text(&room, "mine").await;
    let valid = edit(&alice, &room, &original, "mine, edited").await;
    // Later, but not valid: another sender, and no m.new_content.
    edit(&bob, &room, &original, "bob was here").await;
    alice
        .send_event(
            &room,
            "m.room.message",
            relates(text("* no new content"), "m.replace", &original),
        )
        .await;
    // Another event type may not replace it either.
    alice
        .send_event(
            &room,
            "m.sticker",
            relates(
                json!({ "body": "s", "url": "mxc://x/y", "m.new_content": { "body": "s" } }),
                "m.replace",
                &original,
            ),
        )
        .await;
    for viewer in [&alice, &bob] {
        let ev = get_event(viewer, &room, &original).await;
        assert_eq!(bundle(&ev)["m.replace"]["event_id"], valid, "{ev}");
    }

    // Bob's message edited only by Alice has no edit bundled at all.
    let bobs = bob.send_text(&room, "bob's").await;
    edit(&alice, &room, &bobs, "not yours").await;
    let ev = get_event(&bob, &room, &bobs).await;
    assert!(bundle(&ev).is_null(), "{ev}");
}

#[tokio::test]
async fn redacted_edits_and_redacted_originals_bundle_no_edit() {
    let (_node, alice, room, _) = alice_in_a_room().await;
    let original = alice.send_text(&room, "original").await;
    let first = edit(&alice, &room, &original, "first").await;
    // A strictly later timestamp (ties are broken by event id).
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let second = edit(&alice, &room, &original, "second").await;
    let ev = get_event(&alice, &room, &original).await;
    assert_eq!(bundle(&ev)["m.replace"]["event_id"], second);

    // Redacting the latest edit falls back to the one before.
    alice.redact(&room, &second).await;
    let ev = get_event(&alice, &room, &original).await;
    assert_eq!(bundle(&ev)["m.replace"]["event_id"], first, "{ev}");

    // With every edit redacted there is nothing to bundle.
    alice.redact(&room, &first).await;
    let ev = get_event(&alice, &room, &original).await;
    assert!(bundle(&ev)["m.replace"].is_null(), "{ev}");

    // A redacted original bundles no edit, even a valid one.
    let other = alice.send_text(&room, "other").await;
    edit(&alice, &room, &other, "other, edited").await;
    alice.redact(&room, &other).await;
    let messages = alice.messages(&room, &[("limit", "30")]).await;
    let ev = find(&messages["chunk"], &other);
    assert!(bundle(ev)["m.replace"].is_null(), "{ev}");
}

#[tokio::test]
async fn thread_summary_counts_replies_and_tracks_participation() {
    let (node, alice, room, _) = alice_in_a_room().await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    bob.join(&room).await;
    carol.join(&room).await;
    let root = alice.send_text(&room, "root").await;
    thread_reply(&bob, &room, &root, "one").await;
    let redacted = thread_reply(&bob, &room, &root, "two").await;
    let latest = thread_reply(&bob, &room, &root, "three").await;
    bob.redact(&room, &redacted).await;
    let latest_edit = edit(&bob, &room, &latest, "three, edited").await;

    for (viewer, participated) in [(&alice, true), (&bob, true), (&carol, false)] {
        let ev = get_event(viewer, &room, &root).await;
        let thread = &bundle(&ev)["m.thread"];
        assert_eq!(
            thread["count"], 2,
            "a redacted reply does not count: {thread}"
        );
        assert_eq!(
            thread["current_user_participated"], participated,
            "{}: {thread}",
            viewer.user_id
        );
        let latest_event = &thread["latest_event"];
        assert_eq!(latest_event["event_id"], latest);
        assert_eq!(latest_event["sender"], bob.user_id);
        assert_eq!(latest_event["content"]["body"], "three");
        // The latest reply carries its own bundled edit.
        assert_eq!(
            bundle(latest_event)["m.replace"]["event_id"],
            latest_edit,
            "{latest_event}"
        );
    }

    // In /sync, /messages and /relations alike.
    let sync = carol.sync(None, 0).await;
    let synced = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["event_id"] == root)
        .expect("root in the timeline")
        .clone();
    assert_eq!(bundle(&synced)["m.thread"]["count"], 2, "{synced}");
    let messages = carol.messages(&room, &[("limit", "30")]).await;
    assert_eq!(
        bundle(find(&messages["chunk"], &root))["m.thread"]["latest_event"]["event_id"],
        latest
    );
    let in_thread = carol
        .get_ok(&relations_path(&room, &root, "/m.thread", &[]))
        .await;
    assert_eq!(
        bundle(find(&in_thread["chunk"], &latest))["m.replace"]["event_id"],
        latest_edit,
        "events listed by /relations carry their aggregations too"
    );
}

#[tokio::test]
async fn references_are_bundled_as_a_chunk_of_ids() {
    let (_node, alice, room, _) = alice_in_a_room().await;
    let target = alice.send_text(&room, "poll").await;
    let first = alice
        .send_event(
            &room,
            "m.room.message",
            relates(text("ref 1"), "m.reference", &target),
        )
        .await;
    let second = alice
        .send_event(
            &room,
            "m.room.message",
            relates(text("ref 2"), "m.reference", &target),
        )
        .await;
    let gone = alice
        .send_event(
            &room,
            "m.room.message",
            relates(text("ref 3"), "m.reference", &target),
        )
        .await;
    alice.redact(&room, &gone).await;
    // Annotations are not aggregated by the server.
    alice
        .send_event(
            &room,
            "m.reaction",
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": "👍" } }),
        )
        .await;
    let ev = get_event(&alice, &room, &target).await;
    assert_eq!(
        bundle(&ev),
        &json!({ "m.reference": { "chunk": [{ "event_id": first }, { "event_id": second }] } })
    );
}

#[tokio::test]
async fn aggregations_only_count_what_the_reader_may_see() {
    let (node, alice, room, _) = alice_in_a_room().await;
    let bob = node.register("bob").await;
    bob.join(&room).await;
    let root = alice.send_text(&room, "root").await;
    let seen_edit = edit(&alice, &room, &root, "seen by bob").await;
    let seen_reply = thread_reply(&alice, &room, &root, "seen by bob").await;
    bob.leave(&room).await;
    edit(&alice, &room, &root, "after bob left").await;
    thread_reply(&alice, &room, &root, "after bob left").await;

    // Bob, gone, reads history up to his leave: no later edit or reply shows.
    let messages = bob.messages(&room, &[("limit", "30")]).await;
    let ev = find(&messages["chunk"], &root);
    assert_eq!(bundle(ev)["m.replace"]["event_id"], seen_edit, "{ev}");
    assert_eq!(bundle(ev)["m.thread"]["count"], 1, "{ev}");
    assert_eq!(
        bundle(ev)["m.thread"]["latest_event"]["event_id"],
        seen_reply
    );
    let threads = bob.get_ok(&threads_path(&room, &[])).await;
    assert_eq!(
        thread_keys(&threads),
        vec![(root.clone(), seen_reply.clone())]
    );
    let relations = bob.get_ok(&relations_path(&room, &root, "", &[])).await;
    assert_eq!(
        event_ids(&relations["chunk"]),
        vec![seen_reply.clone(), seen_edit.clone()]
    );

    // Alice sees everything.
    let ev = get_event(&alice, &room, &root).await;
    assert_eq!(bundle(&ev)["m.thread"]["count"], 2, "{ev}");
}

#[tokio::test]
async fn recurse_follows_relations_of_relations() {
    let (_node, alice, room, _) = alice_in_a_room().await;
    let root = alice.send_text(&room, "root").await;
    // root <- a (thread) <- b (reference) <- c (reference) <- d (reference)
    let a = thread_reply(&alice, &room, &root, "a").await;
    let b = alice
        .send_event(
            &room,
            "m.room.message",
            relates(text("b"), "m.reference", &a),
        )
        .await;
    let c = alice
        .send_event(
            &room,
            "m.room.message",
            relates(text("c"), "m.reference", &b),
        )
        .await;
    let d = alice
        .send_event(
            &room,
            "m.room.message",
            relates(text("d"), "m.reference", &c),
        )
        .await;
    // root <- x (reference)
    let x = alice
        .send_event(
            &room,
            "m.room.message",
            relates(text("x"), "m.reference", &root),
        )
        .await;

    let direct = alice
        .get_ok(&relations_path(&room, &root, "", &[("recurse", "false")]))
        .await;
    assert_eq!(event_ids(&direct["chunk"]), vec![x.clone(), a.clone()]);
    assert_eq!(direct["recursion_depth"], 1, "{direct}");

    let deep = alice
        .get_ok(&relations_path(&room, &root, "", &[("recurse", "true")]))
        .await;
    // Three levels deep: d, a fourth, is left out.
    assert_eq!(
        event_ids(&deep["chunk"]),
        vec![x.clone(), c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(deep["recursion_depth"], 3, "{deep}");
    assert!(!event_ids(&deep["chunk"]).contains(&d));
    // The name from before v1.10, which matrix-js-sdk uses when /versions advertises the MSC.
    let versions = alice.get_ok("/_matrix/client/versions").await;
    assert_eq!(versions["unstable_features"]["org.matrix.msc3981"], true);
    let unstable = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "",
            &[("org.matrix.msc3981.recurse", "true")],
        ))
        .await;
    assert_eq!(event_ids(&unstable["chunk"]), event_ids(&deep["chunk"]));
    assert_eq!(unstable["recursion_depth"], 3, "{unstable}");

    // Filters apply at every level: b and c hang off a thread reply, not a reference.
    let refs = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "/m.reference",
            &[("recurse", "true")],
        ))
        .await;
    assert_eq!(event_ids(&refs["chunk"]), vec![x.clone()]);

    // Pagination works over the recursive set too.
    let page = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "",
            &[("recurse", "true"), ("limit", "2"), ("dir", "f")],
        ))
        .await;
    assert_eq!(event_ids(&page["chunk"]), vec![a.clone(), b.clone()]);
    let next = page["next_batch"].as_str().expect("next_batch");
    let page = alice
        .get_ok(&relations_path(
            &room,
            &root,
            "",
            &[
                ("recurse", "true"),
                ("limit", "2"),
                ("dir", "f"),
                ("from", next),
            ],
        ))
        .await;
    assert_eq!(event_ids(&page["chunk"]), vec![c, x]);
    assert!(page.get("next_batch").is_none(), "{page}");
}

#[tokio::test]
async fn relations_rejects_bad_parameters_and_unknown_events() {
    let (node, alice, room, _) = alice_in_a_room().await;
    let root = alice.send_text(&room, "root").await;
    for pairs in [
        vec![("dir", "sideways")],
        vec![("from", "nonsense")],
        vec![("to", "nonsense")],
        vec![("recurse", "maybe")],
        vec![("limit", "lots")],
    ] {
        let resp = alice.get(&relations_path(&room, &root, "", &pairs)).await;
        assert_error(&resp, 400, "M_INVALID_PARAM");
    }
    assert_error(
        &alice.get(&relations_path(&room, "$unknown", "", &[])).await,
        404,
        "M_NOT_FOUND",
    );
    // An event of another room is not found through this one.
    let other = alice.create_room(json!({})).await;
    let elsewhere = alice.send_text(&other, "elsewhere").await;
    assert_error(
        &alice.get(&relations_path(&room, &elsewhere, "", &[])).await,
        404,
        "M_NOT_FOUND",
    );
    let eve = node.register("eve").await;
    assert_error(
        &eve.get(&relations_path(&other, &elsewhere, "", &[])).await,
        403,
        "M_FORBIDDEN",
    );
    // limit=0 answers an empty page.
    thread_reply(&alice, &room, &root, "reply").await;
    let empty = alice
        .get_ok(&relations_path(&room, &root, "", &[("limit", "0")]))
        .await;
    assert_eq!(empty["chunk"], json!([]));
}

// ---------------------------------------------------------------------------------------------
// Checks when sending
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_thread_cannot_start_from_an_event_with_a_relation() {
    let (_node, alice, room, _) = alice_in_a_room().await;
    let root = alice.send_text(&room, "root").await;
    let reply = thread_reply(&alice, &room, &root, "reply").await;
    let edited = edit(&alice, &room, &root, "root, edited").await;
    for target in [&reply, &edited] {
        let resp = alice
            .put(
                &format!(
                    "/rooms/{}/send/m.room.message/{}",
                    enc(&room),
                    neurite_tests::fresh_txn()
                ),
                relates(text("nested"), "m.thread", target),
            )
            .await;
        assert_error(&resp, 400, "M_UNKNOWN");
    }
    // A reply in the thread targets the root and is fine.
    thread_reply(&alice, &room, &root, "another reply").await;
}

#[tokio::test]
async fn the_same_annotation_twice_is_refused_until_redacted() {
    let (_node, alice, room, _) = alice_in_a_room().await;
    let target = alice.send_text(&room, "react to me").await;
    let react = |key: &str| json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } });
    let path = || {
        format!(
            "/rooms/{}/send/m.reaction/{}",
            enc(&room),
            neurite_tests::fresh_txn()
        )
    };
    let first = alice.put_ok(&path(), react("👍")).await["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned();
    assert_error(
        &alice.put(&path(), react("👍")).await,
        400,
        "M_DUPLICATE_ANNOTATION",
    );
    // Another key is another annotation.
    alice.put_ok(&path(), react("🎉")).await;
    // Once the first is redacted the same key may be sent again.
    alice.redact(&room, &first).await;
    alice.put_ok(&path(), react("👍")).await;
}
