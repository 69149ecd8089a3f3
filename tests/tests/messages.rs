//! Messages: sending, transaction ids, redaction, receipts and reading history back.
//!
//! Ports of these Complement client-server scenarios (matrix-org/complement, tests/csapi),
//! rewritten against Neurite's test harness:
//!
//! - `TestSendAndFetchMessage` (room_messages_test.go), plus its sibling
//!   `TestFetchMessagesFromNonExistentRoom`.
//! - `TestSendMessageWithTxn` (room_messages_test.go).
//! - `TestTxnIdempotency` (txnid_test.go), plus its sibling `TestTxnIdempotencyScopedToDevice`.
//! - `TestTxnScopeOnLocalEcho` (txnid_test.go), plus its sibling `TestTxnInEvent`.
//!   (`TestTxnIdWithRefreshToken` is not ported: this node issues no refresh tokens.)
//! - `TestRedact` (redact_test.go).
//! - `TestRoomReceipts` (apidoc_room_receipts_test.go), plus its sibling `TestRoomReadMarkers`.
//!
//! Beyond those: `/messages` in both directions with `from`/`to`/`limit`/`filter` and full
//! pages, sync tokens (`next_batch`, `prev_batch`) accepted by `/messages`, `/context`,
//! `/event` of a redacted event, `/relations` listing edits and thread replies, and the
//! sender's own device (only) seeing `unsigned.transaction_id`.
//!
//! Nothing here needs federation, guests, third-party ids or admin APIs, so no sub-test of the
//! ported scenarios was skipped for those reasons.

use neurite_tests::{
    TestNode, User, assert_error, assert_status, enc, event_ids, has_event, login_on_device,
    next_batch, timeline,
};
use serde_json::{Value, json};

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

/// Sends `n` text messages `"{prefix}{i}"` and returns their ids, oldest first.
async fn send_many(user: &User, room: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(user.send_text(room, &format!("{prefix}{i}")).await);
    }
    ids
}

async fn get_event(user: &User, room: &str, id: &str) -> Value {
    user.get_ok(&format!("/rooms/{}/event/{}", enc(room), enc(id)))
        .await
}

/// The timeline event with this id in a sync response.
fn synced_event(sync: &Value, room: &str, id: &str) -> Value {
    timeline(sync, room)
        .into_iter()
        .find(|e| e["event_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in timeline"))
        .clone()
}

/// Pages through `/messages` from the start in `dir` with page size `limit`, asserting that
/// every page but the last is full and that only the last page lacks `end`. Returns all event
/// ids in the order of travel.
async fn page_through(
    user: &User,
    room: &str,
    dir: &str,
    limit: usize,
    extra: &[(&str, &str)],
) -> Vec<String> {
    let limit_s = limit.to_string();
    let mut from: Option<String> = None;
    let mut all = Vec::new();
    for _ in 0..100 {
        let mut pairs = vec![("dir", dir), ("limit", limit_s.as_str())];
        if let Some(f) = &from {
            pairs.push(("from", f.as_str()));
        }
        pairs.extend_from_slice(extra);
        let page = user.messages(room, &pairs).await;
        assert!(page["start"].is_string(), "page without start: {page}");
        if let Some(f) = &from {
            assert_eq!(page["start"], f.as_str(), "start is not the from token");
        }
        let ids = event_ids(&page["chunk"]);
        assert!(ids.len() <= limit, "page over the limit: {page}");
        all.extend(ids.iter().cloned());
        match page["end"].as_str() {
            Some(end) => {
                // A page that says there is more is a full page (an empty page may only
                // follow a full page that ended exactly at the last event).
                assert!(
                    ids.len() == limit || ids.is_empty(),
                    "short page with an end token: {page}"
                );
                if ids.is_empty() {
                    return all;
                }
                from = Some(end.to_owned());
            }
            None => return all,
        }
    }
    panic!("pagination did not finish");
}

fn assert_unique(ids: &[String]) {
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        ids.len(),
        "duplicate events across pages: {ids:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// TestSendAndFetchMessage
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sent_message_is_returned_by_messages_from_a_sync_token() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let token = next_batch(&alice.sync(None, 0).await);
    let id = alice
        .send_event_with_txn(
            &room,
            "m.room.message",
            "send-and-fetch",
            text("TestSendAndFetchMessage"),
        )
        .await;
    alice
        .sync_until(Some(&token), |s| has_event(s, &room, &id))
        .await;
    let page = alice
        .messages(&room, &[("dir", "f"), ("from", &token)])
        .await;
    let chunk = page["chunk"].as_array().expect("chunk");
    assert_eq!(chunk.len(), 1, "{page}");
    assert_eq!(chunk[0]["event_id"], id.as_str());
    assert_eq!(chunk[0]["type"], "m.room.message");
    assert_eq!(chunk[0]["content"]["body"], "TestSendAndFetchMessage");
    assert_eq!(chunk[0]["sender"], alice.user_id.as_str());
    assert_eq!(chunk[0]["room_id"], room.as_str());
}

#[tokio::test]
async fn messages_of_an_unknown_room_are_forbidden() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = format!("!does-not-exist:{}", node.server_name());
    let resp = alice
        .get(&format!("/rooms/{}/messages?dir=b", enc(&room)))
        .await;
    assert_status(&resp, 403);
}

// ---------------------------------------------------------------------------------------------
// TestSendMessageWithTxn, TestTxnIdempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn resending_with_the_same_txn_id_returns_the_same_event() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let first = alice
        .send_event_with_txn(&room, "m.room.message", "lorem", text("test"))
        .await;
    let second = alice
        .send_event_with_txn(&room, "m.room.message", "lorem", text("test"))
        .await;
    assert_eq!(first, second);
    // Only one event was stored.
    let page = alice.messages(&room, &[("dir", "b"), ("limit", "5")]).await;
    let messages: Vec<&Value> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    assert_eq!(messages.len(), 1, "{page}");
}

#[tokio::test]
async fn txn_id_is_scoped_to_room_and_ignores_content() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room1 = alice.create_room(json!({})).await;
    let room2 = alice.create_room(json!({})).await;
    let e1 = alice
        .send_event_with_txn(&room1, "m.room.message", "abc", text("first"))
        .await;
    let e2 = alice
        .send_event_with_txn(&room1, "m.room.message", "abc", text("first"))
        .await;
    assert_eq!(e1, e2);
    // Changed content with the same transaction id is still the same request.
    let e3 = alice
        .send_event_with_txn(&room1, "m.room.message", "abc", text("second"))
        .await;
    assert_eq!(e1, e3);
    assert_eq!(
        get_event(&alice, &room1, &e3).await["content"]["body"],
        "first"
    );
    // Another room is another endpoint: the transaction id may be reused there.
    let e4 = alice
        .send_event_with_txn(&room2, "m.room.message", "abc", text("first"))
        .await;
    assert_ne!(e4, e1);
    assert_eq!(
        get_event(&alice, &room2, &e4).await["room_id"],
        room2.as_str()
    );
}

#[tokio::test]
async fn txn_id_is_shared_by_logins_on_the_same_device_only() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let e1 = alice
        .send_event_with_txn(&room, "m.room.message", "abcdef", text("foo"))
        .await;
    // A second login on the same device continues that device's transactions.
    let same_device = login_on_device(&node, "alice", "correct horse", &alice.device_id).await;
    assert_eq!(same_device.device_id, alice.device_id);
    let e2 = same_device
        .send_event_with_txn(&room, "m.room.message", "abcdef", text("foo"))
        .await;
    assert_eq!(e1, e2);
    // Another device has its own transaction ids.
    let other_device = node.login("alice", "correct horse").await;
    assert_ne!(other_device.device_id, alice.device_id);
    let e3 = other_device
        .send_event_with_txn(&room, "m.room.message", "abcdef", text("foo"))
        .await;
    assert_ne!(e1, e3);
}

// ---------------------------------------------------------------------------------------------
// TestTxnScopeOnLocalEcho, TestTxnInEvent
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn transaction_id_is_echoed_only_to_the_sending_device() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let alice_phone = node.login("alice", "correct horse").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let id = alice
        .send_event_with_txn(&room, "m.room.message", "abdefgh", text("first"))
        .await;

    // The sending device sees its transaction id in sync, /event and /messages.
    let sync = alice.sync_until(None, |s| has_event(s, &room, &id)).await;
    assert_eq!(
        synced_event(&sync, &room, &id)["unsigned"]["transaction_id"],
        "abdefgh"
    );
    assert_eq!(
        get_event(&alice, &room, &id).await["unsigned"]["transaction_id"],
        "abdefgh"
    );
    let page = alice.messages(&room, &[("dir", "b"), ("limit", "1")]).await;
    assert_eq!(page["chunk"][0]["event_id"], id.as_str());
    assert_eq!(page["chunk"][0]["unsigned"]["transaction_id"], "abdefgh");

    // Another device of the same user, and another user, do not.
    for other in [&alice_phone, &bob] {
        let sync = other.sync_until(None, |s| has_event(s, &room, &id)).await;
        let ev = synced_event(&sync, &room, &id);
        assert!(ev["unsigned"].get("transaction_id").is_none(), "{ev}");
        let ev = get_event(other, &room, &id).await;
        assert!(ev["unsigned"].get("transaction_id").is_none(), "{ev}");
        let page = other.messages(&room, &[("dir", "b"), ("limit", "1")]).await;
        assert!(
            page["chunk"][0]["unsigned"].get("transaction_id").is_none(),
            "{page}"
        );
    }

    // A new login that takes over the sending device's id sees it too.
    let relogin = login_on_device(&node, "alice", "correct horse", &alice.device_id).await;
    let sync = relogin.sync_until(None, |s| has_event(s, &room, &id)).await;
    assert_eq!(
        synced_event(&sync, &room, &id)["unsigned"]["transaction_id"],
        "abdefgh"
    );
}

// ---------------------------------------------------------------------------------------------
// TestRedact
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redacted_event_content_is_stripped_for_everyone() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let content = text("expected message body");
    let id = alice
        .send_event(&room, "m.room.message", content.clone())
        .await;
    let bob_since = next_batch(&bob.sync(None, 0).await);
    assert_eq!(get_event(&bob, &room, &id).await["content"], content);

    let path = format!("/rooms/{}/redact/{}/{}", enc(&room), enc(&id), "redact-1");
    let redaction = alice.put_ok(&path, json!({ "reason": "reasons..." })).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same transaction id gives the same redaction.
    assert_eq!(
        alice.put_ok(&path, json!({ "reason": "reasons..." })).await["event_id"],
        redaction.as_str()
    );

    // /event: content stripped, the redaction attached.
    let ev = get_event(&bob, &room, &id).await;
    assert_eq!(ev["content"], json!({}), "{ev}");
    assert_eq!(ev["type"], "m.room.message");
    assert_eq!(ev["sender"], alice.user_id.as_str());
    let because = &ev["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction.as_str(), "{ev}");
    assert_eq!(because["type"], "m.room.redaction");
    assert_eq!(because["sender"], alice.user_id.as_str());
    assert_eq!(because["content"]["reason"], "reasons...");

    // /messages shows the redacted form too.
    let page = bob.messages(&room, &[("dir", "b"), ("limit", "5")]).await;
    let original = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == id.as_str())
        .expect("in page");
    assert_eq!(original["content"], json!({}));
    assert_eq!(
        original["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str()
    );

    // Sync delivers the redaction, naming the event it redacts (in content since v11).
    let sync = bob
        .sync_until(Some(&bob_since), |s| has_event(s, &room, &redaction))
        .await;
    let r = synced_event(&sync, &room, &redaction);
    assert_eq!(r["type"], "m.room.redaction");
    let target = r["content"]["redacts"].as_str().or(r["redacts"].as_str());
    assert_eq!(target, Some(id.as_str()), "{r}");
}

#[tokio::test]
async fn redacting_others_events_needs_the_redact_power_level() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let alices = alice.send_text(&room, "alice's").await;
    let bobs = bob.send_text(&room, "bob's").await;
    let resp = bob
        .put(
            &format!("/rooms/{}/redact/{}/r1", enc(&room), enc(&alices)),
            json!({}),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");
    assert_eq!(
        get_event(&bob, &room, &alices).await["content"]["body"],
        "alice's"
    );
    // Everyone may redact their own events; a moderator may redact anyone's.
    bob.put_ok(
        &format!("/rooms/{}/redact/{}/r2", enc(&room), enc(&bobs)),
        json!({}),
    )
    .await;
    assert_eq!(get_event(&alice, &room, &bobs).await["content"], json!({}));
    let third = bob.send_text(&room, "another").await;
    alice
        .put_ok(
            &format!("/rooms/{}/redact/{}/r3", enc(&room), enc(&third)),
            json!({}),
        )
        .await;
    assert_eq!(get_event(&bob, &room, &third).await["content"], json!({}));
    // Redacting an unknown event fails cleanly.
    let resp = alice
        .put(
            &format!("/rooms/{}/redact/{}/r4", enc(&room), enc("$nope")),
            json!({}),
        )
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// TestRoomReceipts, TestRoomReadMarkers
// ---------------------------------------------------------------------------------------------

/// The `m.receipt` ephemeral event of a room in a sync response.
fn receipt_event(sync: &Value, room: &str) -> Option<Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .cloned()
}

fn has_receipt(sync: &Value, room: &str, event: &str, ty: &str, user: &str) -> bool {
    receipt_event(sync, room).is_some_and(|r| r["content"][event][ty][user].is_object())
}

#[tokio::test]
async fn read_receipts_reach_sync_without_room_id() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let first = alice.send_text(&room, "Hello world!").await;
    alice
        .post_ok(
            &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&first)),
            json!({}),
        )
        .await;
    let sync = alice
        .sync_until(None, |s| {
            has_receipt(s, &room, &first, "m.read", &alice.user_id)
        })
        .await;
    let r = receipt_event(&sync, &room).unwrap();
    assert!(
        r["content"][&first]["m.read"][&alice.user_id]["ts"].is_number(),
        "{r}"
    );
    assert!(r.get("room_id").is_none(), "{r}");

    let since = next_batch(&sync);
    let second = alice.send_text(&room, "Hello again").await;
    alice
        .post_ok(
            &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&second)),
            json!({}),
        )
        .await;
    let sync = alice
        .sync_until(Some(&since), |s| {
            has_receipt(s, &room, &second, "m.read", &alice.user_id)
        })
        .await;
    let r = receipt_event(&sync, &room).unwrap();
    assert!(r.get("room_id").is_none(), "{r}");
}

#[tokio::test]
async fn private_read_receipts_are_seen_only_by_their_owner() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let first = bob.send_text(&room, "one").await;
    let second = bob.send_text(&room, "two").await;
    alice
        .post_ok(
            &format!(
                "/rooms/{}/receipt/m.read.private/{}",
                enc(&room),
                enc(&first)
            ),
            json!({}),
        )
        .await;
    alice
        .post_ok(
            &format!("/rooms/{}/receipt/m.read/{}", enc(&room), enc(&second)),
            json!({}),
        )
        .await;
    alice
        .sync_until(None, |s| {
            has_receipt(s, &room, &first, "m.read.private", &alice.user_id)
        })
        .await;
    // Bob sees the public receipt, which was set after the private one, but not the private one.
    let sync = bob
        .sync_until(None, |s| {
            has_receipt(s, &room, &second, "m.read", &alice.user_id)
        })
        .await;
    let r = receipt_event(&sync, &room).unwrap();
    assert!(!r.to_string().contains("m.read.private"), "{r}");
    // Unknown receipt types are refused.
    let resp = alice
        .post(
            &format!("/rooms/{}/receipt/m.bogus/{}", enc(&room), enc(&first)),
            json!({}),
        )
        .await;
    assert_status(&resp, 400);
}

#[tokio::test]
async fn read_markers_set_read_receipt_and_fully_read_marker() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let id = alice.send_text(&room, "Hello world!").await;
    alice
        .post_ok(
            &format!("/rooms/{}/read_markers", enc(&room)),
            json!({ "m.fully_read": id, "m.read": id }),
        )
        .await;
    alice
        .sync_until(None, |s| {
            has_receipt(s, &room, &id, "m.read", &alice.user_id)
        })
        .await;
    alice
        .sync_until(None, |s| {
            s["rooms"]["join"][&room]["account_data"]["events"]
                .as_array()
                .is_some_and(|a| {
                    a.iter().any(|e| {
                        e["type"] == "m.fully_read" && e["content"]["event_id"] == id.as_str()
                    })
                })
        })
        .await;
}

// ---------------------------------------------------------------------------------------------
// /messages: directions, from/to/limit/filter, full pages, sync tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_backward_pages_through_whole_history() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let sent = send_many(&alice, &room, "m", 25).await;
    let state = alice.get_ok(&format!("/rooms/{}/state", enc(&room))).await;
    let state_count = state.as_array().unwrap().len();

    let all = page_through(&alice, &room, "b", 10, &[]).await;
    assert_unique(&all);
    assert_eq!(all.len(), sent.len() + state_count, "{all:?}");
    // Newest first: the messages, newest to oldest, then the room's initial state.
    let newest: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(&all[..sent.len()], &newest[..]);
    let create = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .unwrap();
    assert_eq!(
        all.last().unwrap(),
        create["event_id"].as_str().unwrap(),
        "the last page ends at the create event"
    );

    // Page sizes other than 10 give the same history.
    assert_eq!(page_through(&alice, &room, "b", 7, &[]).await, all);
    assert_eq!(page_through(&alice, &room, "b", all.len(), &[]).await, all);
}

#[tokio::test]
async fn messages_forward_pages_through_whole_history() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let sent = send_many(&alice, &room, "m", 23).await;
    let backward = page_through(&alice, &room, "b", 10, &[]).await;
    let forward = page_through(&alice, &room, "f", 10, &[]).await;
    assert_unique(&forward);
    let mut chronological = backward.clone();
    chronological.reverse();
    assert_eq!(forward, chronological);
    assert_eq!(&forward[forward.len() - sent.len()..], &sent[..]);
    // An exactly-full last page, too.
    assert_eq!(
        page_through(&alice, &room, "f", forward.len(), &[]).await,
        forward
    );
}

#[tokio::test]
async fn messages_from_and_to_accept_sync_tokens() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let t0 = next_batch(&alice.sync(None, 0).await);
    let first = send_many(&alice, &room, "a", 10).await;
    let t1 = next_batch(&alice.sync(None, 0).await);
    let second = send_many(&alice, &room, "b", 10).await;

    // Backward from a sync next_batch: the newest events before that point.
    let page = alice
        .messages(&room, &[("dir", "b"), ("from", &t1), ("limit", "3")])
        .await;
    assert_eq!(
        event_ids(&page["chunk"]),
        vec![first[9].clone(), first[8].clone(), first[7].clone()]
    );
    assert!(page["end"].is_string());
    // Backward from now down to t1: exactly the second batch, newest first.
    let page = alice
        .messages(&room, &[("dir", "b"), ("to", &t1), ("limit", "50")])
        .await;
    let newest: Vec<String> = second.iter().rev().cloned().collect();
    assert_eq!(event_ids(&page["chunk"]), newest);
    // Forward from t0 to t1: exactly the first batch, oldest first.
    let page = alice
        .messages(
            &room,
            &[("dir", "f"), ("from", &t0), ("to", &t1), ("limit", "50")],
        )
        .await;
    assert_eq!(event_ids(&page["chunk"]), first);
    // Forward from t1 with a limit: the start of the second batch, and a token to go on.
    let page = alice
        .messages(&room, &[("dir", "f"), ("from", &t1), ("limit", "4")])
        .await;
    assert_eq!(event_ids(&page["chunk"]), second[..4].to_vec());
    let end = page["end"].as_str().expect("end").to_owned();
    let page = alice
        .messages(&room, &[("dir", "f"), ("from", &end), ("limit", "50")])
        .await;
    assert_eq!(event_ids(&page["chunk"]), second[4..].to_vec());
    assert!(page.get("end").is_none(), "{page}");
    // A junk token is refused.
    let resp = alice
        .get(&format!(
            "/rooms/{}/messages?dir=b&from=garbage",
            enc(&room)
        ))
        .await;
    assert_status(&resp, 400);
    let resp = alice
        .get(&format!("/rooms/{}/messages?dir=sideways", enc(&room)))
        .await;
    assert_status(&resp, 400);
}

#[tokio::test]
async fn messages_continue_from_a_sync_timeline_prev_batch() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let sent = send_many(&alice, &room, "m", 12).await;
    let filter = json!({ "room": { "timeline": { "limit": 5 } } });
    let sync = alice.sync_filtered(&filter, None, 0).await;
    let tl = &sync["rooms"]["join"][&room]["timeline"];
    assert_eq!(event_ids(&tl["events"]), sent[7..].to_vec());
    assert_eq!(tl["limited"], true);
    let prev = tl["prev_batch"].as_str().expect("prev_batch");
    let page = alice
        .messages(&room, &[("dir", "b"), ("from", prev), ("limit", "5")])
        .await;
    let want: Vec<String> = sent[2..7].iter().rev().cloned().collect();
    assert_eq!(event_ids(&page["chunk"]), want);
}

#[tokio::test]
async fn messages_filter_selects_types_and_senders() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let mut from_bob = Vec::new();
    let mut from_alice = Vec::new();
    let mut custom = Vec::new();
    for i in 0..6 {
        from_alice.push(alice.send_text(&room, &format!("a{i}")).await);
        from_bob.push(bob.send_text(&room, &format!("b{i}")).await);
        custom.push(
            alice
                .send_event(&room, "com.example.ping", json!({ "i": i }))
                .await,
        );
    }
    let rev = |v: &[String]| v.iter().rev().cloned().collect::<Vec<_>>();

    let only_bob = json!({ "types": ["m.room.message"], "senders": [bob.user_id] }).to_string();
    let page = alice
        .messages(
            &room,
            &[("dir", "b"), ("limit", "50"), ("filter", &only_bob)],
        )
        .await;
    assert_eq!(event_ids(&page["chunk"]), rev(&from_bob));

    let no_messages =
        json!({ "not_types": ["m.room.message", "m.room.member"], "types": ["com.example.*"] })
            .to_string();
    let page = alice
        .messages(
            &room,
            &[("dir", "f"), ("limit", "50"), ("filter", &no_messages)],
        )
        .await;
    assert_eq!(event_ids(&page["chunk"]), custom);

    let not_bob = json!({ "not_senders": [bob.user_id], "types": ["m.room.message"] }).to_string();
    let page = alice
        .messages(
            &room,
            &[("dir", "b"), ("limit", "50"), ("filter", &not_bob)],
        )
        .await;
    assert_eq!(event_ids(&page["chunk"]), rev(&from_alice));

    // A filter's limit applies when the request gives none; pages stay full across gaps.
    let limited =
        json!({ "types": ["m.room.message"], "senders": [bob.user_id], "limit": 4 }).to_string();
    let page = alice
        .messages(&room, &[("dir", "b"), ("filter", &limited)])
        .await;
    assert_eq!(event_ids(&page["chunk"]), rev(&from_bob)[..4].to_vec());
    let end = page["end"].as_str().expect("end").to_owned();
    let page = alice
        .messages(&room, &[("dir", "b"), ("from", &end), ("filter", &limited)])
        .await;
    assert_eq!(event_ids(&page["chunk"]), rev(&from_bob)[4..].to_vec());

    // The filtered pages, joined, are the full filtered history.
    let paged = page_through(&alice, &room, "f", 3, &[("filter", &only_bob)]).await;
    assert_eq!(paged, from_bob);

    let resp = alice
        .get(&format!("/rooms/{}/messages?filter=notjson", enc(&room)))
        .await;
    assert_status(&resp, 400);
}

// ---------------------------------------------------------------------------------------------
// /context
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn context_returns_events_around_an_event() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "name": "ctx" }))
        .await;
    let sent = send_many(&alice, &room, "m", 10).await;
    let ctx = alice
        .get_ok(&format!(
            "/rooms/{}/context/{}?limit=4",
            enc(&room),
            enc(&sent[5])
        ))
        .await;
    assert_eq!(ctx["event"]["event_id"], sent[5].as_str());
    assert_eq!(ctx["event"]["content"]["body"], "m5");
    // Before: newest first. After: oldest first.
    assert_eq!(
        event_ids(&ctx["events_before"]),
        vec![sent[4].clone(), sent[3].clone()]
    );
    assert_eq!(
        event_ids(&ctx["events_after"]),
        vec![sent[6].clone(), sent[7].clone()]
    );
    let state = ctx["state"].as_array().expect("state");
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "ctx"),
        "{ctx}"
    );
    // The tokens continue the history on both sides.
    let start = ctx["start"].as_str().expect("start");
    let end = ctx["end"].as_str().expect("end");
    let older = alice
        .messages(&room, &[("dir", "b"), ("from", start), ("limit", "2")])
        .await;
    assert_eq!(
        event_ids(&older["chunk"]),
        vec![sent[2].clone(), sent[1].clone()]
    );
    let newer = alice
        .messages(&room, &[("dir", "f"), ("from", end), ("limit", "10")])
        .await;
    assert_eq!(
        event_ids(&newer["chunk"]),
        vec![sent[8].clone(), sent[9].clone()]
    );

    // limit=0 still returns the event itself.
    let ctx = alice
        .get_ok(&format!(
            "/rooms/{}/context/{}?limit=0",
            enc(&room),
            enc(&sent[5])
        ))
        .await;
    assert_eq!(ctx["event"]["event_id"], sent[5].as_str());
    assert_eq!(ctx["events_before"], json!([]));
    assert_eq!(ctx["events_after"], json!([]));
    // At the newest event there is nothing after.
    let ctx = alice
        .get_ok(&format!("/rooms/{}/context/{}", enc(&room), enc(&sent[9])))
        .await;
    assert_eq!(ctx["events_after"], json!([]));
    assert_eq!(
        event_ids(&ctx["events_before"])[..5],
        sent[4..9].iter().rev().cloned().collect::<Vec<_>>()[..]
    );

    let resp = alice
        .get(&format!(
            "/rooms/{}/context/{}",
            enc(&room),
            enc("$unknown")
        ))
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    let outsider = node.register("eve").await;
    let resp = outsider
        .get(&format!("/rooms/{}/context/{}", enc(&room), enc(&sent[5])))
        .await;
    assert!(
        resp.0 == 403 || resp.0 == 404,
        "outsider read context: {resp:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// /relations
// ---------------------------------------------------------------------------------------------

fn relations_path(room: &str, event: &str, rest: &str) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/relations/{}{rest}",
        enc(room),
        enc(event)
    )
}

#[tokio::test]
async fn relations_list_edits_thread_replies_and_reactions() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room).await;
    let root = alice.send_text(&room, "original").await;
    let unrelated = alice.send_text(&room, "unrelated").await;
    let edit1 = alice
        .send_event(
            &room,
            "m.room.message",
            json!({
                "msgtype": "m.text", "body": "* edited",
                "m.new_content": { "msgtype": "m.text", "body": "edited" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": root },
            }),
        )
        .await;
    let reply = bob
        .send_event(
            &room,
            "m.room.message",
            json!({
                "msgtype": "m.text", "body": "a reply in a thread",
                "m.relates_to": {
                    "rel_type": "m.thread", "event_id": root,
                    "is_falling_back": true, "m.in_reply_to": { "event_id": root },
                },
            }),
        )
        .await;
    let reaction = bob
        .send_event(
            &room,
            "m.reaction",
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "👍" } }),
        )
        .await;
    let edit2 = alice
        .send_event(
            &room,
            "m.room.message",
            json!({
                "msgtype": "m.text", "body": "* edited again",
                "m.new_content": { "msgtype": "m.text", "body": "edited again" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": root },
            }),
        )
        .await;

    // Everything relating to the root, newest first by default.
    let all = bob.get_ok(&relations_path(&room, &root, "")).await;
    assert_eq!(
        event_ids(&all["chunk"]),
        vec![
            edit2.clone(),
            reaction.clone(),
            reply.clone(),
            edit1.clone()
        ]
    );
    assert!(all.get("next_batch").is_none(), "{all}");
    // Oldest first with dir=f.
    let fwd = bob
        .get_ok(&format!("{}?dir=f", relations_path(&room, &root, "")))
        .await;
    assert_eq!(
        event_ids(&fwd["chunk"]),
        vec![
            edit1.clone(),
            reply.clone(),
            reaction.clone(),
            edit2.clone()
        ]
    );
    // By relation type, and by relation and event type.
    let edits = bob
        .get_ok(&relations_path(&room, &root, "/m.replace"))
        .await;
    assert_eq!(
        event_ids(&edits["chunk"]),
        vec![edit2.clone(), edit1.clone()]
    );
    assert_eq!(
        edits["chunk"][0]["content"]["m.new_content"]["body"],
        "edited again"
    );
    let thread = bob.get_ok(&relations_path(&room, &root, "/m.thread")).await;
    assert_eq!(event_ids(&thread["chunk"]), vec![reply.clone()]);
    let reactions = bob
        .get_ok(&relations_path(&room, &root, "/m.annotation/m.reaction"))
        .await;
    assert_eq!(event_ids(&reactions["chunk"]), vec![reaction.clone()]);
    let none = bob
        .get_ok(&relations_path(
            &room,
            &root,
            "/m.annotation/m.room.message",
        ))
        .await;
    assert_eq!(none["chunk"], json!([]));
    let nothing = bob.get_ok(&relations_path(&room, &unrelated, "")).await;
    assert_eq!(nothing["chunk"], json!([]));

    // Pagination with limit and next_batch visits each relation once.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let q = match &from {
            Some(f) => format!("?limit=1&from={}", enc(f)),
            None => "?limit=1".to_owned(),
        };
        let page = bob
            .get_ok(&format!("{}{q}", relations_path(&room, &root, "")))
            .await;
        seen.extend(event_ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(n) => from = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![
            edit2.clone(),
            reaction.clone(),
            reply.clone(),
            edit1.clone()
        ]
    );

    // A redacted edit no longer relates to anything.
    alice
        .put_ok(
            &format!("/rooms/{}/redact/{}/rr", enc(&room), enc(&edit2)),
            json!({}),
        )
        .await;
    let edits = bob
        .get_ok(&relations_path(&room, &root, "/m.replace"))
        .await;
    assert_eq!(event_ids(&edits["chunk"]), vec![edit1.clone()]);

    // Outsiders may not look.
    let outsider = node.register("eve").await;
    let resp = outsider.get(&relations_path(&room, &root, "")).await;
    assert!(
        resp.0 == 403 || resp.0 == 404,
        "outsider read relations: {resp:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// /event
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn event_endpoint_returns_client_format_and_404_for_unknown() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let other = alice.create_room(json!({})).await;
    let id = alice.send_text(&room, "hello").await;
    let ev = get_event(&alice, &room, &id).await;
    assert_eq!(ev["event_id"], id.as_str());
    assert_eq!(ev["room_id"], room.as_str());
    assert_eq!(ev["sender"], alice.user_id.as_str());
    assert_eq!(ev["content"], text("hello"));
    assert!(ev["origin_server_ts"].is_number());
    assert!(ev["unsigned"]["age"].is_number());
    for server_only in [
        "auth_events",
        "prev_events",
        "hashes",
        "signatures",
        "depth",
    ] {
        assert!(ev.get(server_only).is_none(), "{server_only} leaked: {ev}");
    }
    let resp = alice
        .get(&format!("/rooms/{}/event/{}", enc(&room), enc("$unknown")))
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
    // An event asked for under the wrong room is not found.
    let resp = alice
        .get(&format!("/rooms/{}/event/{}", enc(&other), enc(&id)))
        .await;
    assert_error(&resp, 404, "M_NOT_FOUND");
}

/// History visibility `joined`: a new member reads nothing from before their join, in
/// /messages, /event, /context or their first sync of the room; `shared` shows it all.
#[tokio::test]
async fn joined_history_visibility_hides_events_before_the_join() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{
                "type": "m.room.history_visibility",
                "content": { "history_visibility": "joined" },
            }],
        }))
        .await;
    let before = alice.send_text(&room, "before bob").await;
    bob.join(&room).await;
    let after = alice.send_text(&room, "after bob").await;

    let page = bob.messages(&room, &[("dir", "b"), ("limit", "50")]).await;
    let ids = event_ids(&page["chunk"]);
    assert!(
        ids.contains(&after),
        "bob must see what came after his join"
    );
    assert!(
        !ids.contains(&before),
        "bob must not see what came before his join: {ids:?}"
    );
    assert!(
        page.get("end").is_none(),
        "nothing older is visible to bob: {page}"
    );

    let (status, _) = bob
        .get(&format!("/rooms/{}/event/{}", enc(&room), enc(&before)))
        .await;
    assert_eq!(status, 404);
    let (status, _) = bob
        .get(&format!("/rooms/{}/context/{}", enc(&room), enc(&before)))
        .await;
    assert_eq!(status, 404);

    let sync = bob.sync(None, 0).await;
    let ids: Vec<&str> = timeline(&sync, &room)
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert!(ids.contains(&after.as_str()));
    assert!(
        !ids.contains(&before.as_str()),
        "initial sync leaked pre-join history: {ids:?}"
    );

    // The creator, joined throughout, still reads everything.
    let page = alice
        .messages(&room, &[("dir", "b"), ("limit", "50")])
        .await;
    assert!(event_ids(&page["chunk"]).contains(&before));
}

#[tokio::test]
async fn timestamp_to_event_finds_the_closest_visible_event_each_way() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let ids = send_many(&alice, &room, "at ", 3).await;
    let ts_of = |ev: &Value| ev["origin_server_ts"].as_i64().unwrap();
    let first = get_event(&alice, &room, &ids[0]).await;
    let last = get_event(&alice, &room, &ids[2]).await;
    let path = |ts: i64, dir: &str| {
        format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}",
            enc(&room)
        )
    };

    // Backwards from after the last message: the last message.
    let found = assert_status(&alice.get(&path(ts_of(&last) + 60_000, "b")).await, 200);
    assert_eq!(found["event_id"], ids[2].as_str(), "{found}");
    assert_eq!(found["origin_server_ts"], ts_of(&last), "{found}");
    // Forwards from the first message's time: an event no older than it.
    let found = assert_status(&alice.get(&path(ts_of(&first), "f")).await, 200);
    assert!(ts_of(&found) >= ts_of(&first), "{found}");
    // Forwards from the future, or backwards from before the room existed: nothing.
    assert_error(
        &alice.get(&path(ts_of(&last) + 60_000, "f")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&alice.get(&path(0, "b")).await, 404, "M_NOT_FOUND");

    // Bad parameters, and a room the user is not in.
    let base = format!("/_matrix/client/v1/rooms/{}/timestamp_to_event", enc(&room));
    assert_error(
        &alice.get(&format!("{base}?dir=f")).await,
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &alice.get(&format!("{base}?ts=1")).await,
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &alice.get(&format!("{base}?ts=x&dir=f")).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.get(&format!("{base}?ts=1&dir=up")).await,
        400,
        "M_INVALID_PARAM",
    );
    let bob = node.register("bob").await;
    assert_error(&bob.get(&path(ts_of(&last), "b")).await, 403, "M_FORBIDDEN");
}
