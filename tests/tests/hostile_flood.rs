//! Floods from hostile peers: a server of the tests' own ([`EvilPeer`]) opens streams it never
//! finishes, sends bodies made to be expensive, answers fetches with far more than was asked
//! for, and tries to hold more connections than a node allows. Each attack goes through the
//! real federation path (libp2p, Noise, yamux, HTTP/1.1) to a real node, which must bound
//! what it spends and go on serving everyone else.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use neurite_core::{FederationLimits, storage::staged};
use neurite_tests::{TestNode, WAIT, assert_error, assert_status, enc, evil::EvilPeer, serde_json};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const VERSION: &str = "/_matrix/federation/v1/version";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A node whose federation limits the test adjusts.
async fn node_with(adjust: impl FnOnce(&mut FederationLimits)) -> TestNode {
    TestNode::start_with(|config| adjust(&mut config.federation_limits)).await
}

/// Reads from `stream` until the node closes it (or resets it); bounded by [`WAIT`]. Returns
/// what was read.
async fn read_until_closed(stream: &mut libp2p::Stream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the node left the stream open");
    got
}

/// Asks `/version` until the answer is not a 200 (bounded by [`WAIT`]); returns it.
async fn until_refused(evil: &EvilPeer) -> (StatusCode, Value) {
    let wait = async {
        loop {
            let resp = evil.request(Method::GET, VERSION, None).await;
            if resp.0 != StatusCode::OK {
                return resp;
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the node never refused a request over the limit")
}

#[tokio::test]
async fn a_request_head_sent_slowly_is_cut_off_and_others_are_served_meanwhile() {
    let node = node_with(|l| l.header_read_timeout = Duration::from_secs(1)).await;
    let evil = EvilPeer::connect(&node).await;
    let mut slow = evil.open_stream().await;
    slow.write_all(b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    slow.flush().await.expect("flush");
    // Meanwhile, a request sent properly is answered.
    let version = assert_status(&evil.request(Method::GET, VERSION, None).await, 200);
    assert_eq!(version["server"]["name"], "Neurite");
    // The head never ends: the node gives up on it and closes the stream without a 200.
    let answer = read_until_closed(&mut slow).await;
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn a_body_that_never_ends_is_cut_off() {
    let node = node_with(|l| l.request_timeout = Duration::from_secs(2)).await;
    let evil = EvilPeer::connect(&node).await;
    let path = "/_matrix/federation/v1/send/slow";
    let body = json!({ "pdus": [] });
    let auth = evil.authorization(&Method::PUT, path, Some(&body));
    let mut stream = evil.open_stream().await;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"pdus\":",
        evil.target()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.flush().await.expect("flush");
    read_until_closed(&mut stream).await;
    // The node is fine.
    assert_status(&evil.request(Method::GET, VERSION, None).await, 200);
}

#[tokio::test]
async fn a_body_that_holds_the_body_budget_holds_up_no_request_without_a_body() {
    let node = node_with(|l| l.max_body_bytes_in_flight = 1024).await;
    let alice = node.register("alice").await;
    let evil = EvilPeer::connect(&node).await;
    // A signed transaction whose body never comes takes the whole budget while it waits.
    let path = "/_matrix/federation/v1/send/held";
    let auth = evil.authorization(&Method::PUT, path, Some(&json!({})));
    let mut held = evil.open_stream().await;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        evil.target()
    );
    held.write_all(head.as_bytes()).await.expect("write");
    held.flush().await.expect("flush");
    // Signed requests without a body need no room in it.
    let other = EvilPeer::connect(&node).await;
    for _ in 0..3 {
        let path = format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            neurite_tests::enc(&alice.user_id)
        );
        let resp = other.request(Method::GET, &path, None).await;
        assert_status(&resp, 200);
    }
    drop(held);
}

#[tokio::test]
async fn a_peer_over_its_request_limit_is_refused_at_once_and_others_are_served() {
    let node = node_with(|l| {
        l.max_requests_per_peer = 3;
        l.max_requests = 3;
        l.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let evil = EvilPeer::connect(&node).await;
    let other = EvilPeer::connect(&node).await;
    // Three streams that never send a thing take the peer's three places.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(evil.open_stream().await);
    }
    let refused = until_refused(&evil).await;
    assert_error(&refused, 429, "M_LIMIT_EXCEEDED");
    // Another peer is served all the while, though the one peer holds the node's total.
    assert_status(&other.request(Method::GET, VERSION, None).await, 200);
    // Once the streams close, the peer is served again.
    drop(held);
    let wait =
        async { while evil.request(Method::GET, VERSION, None).await.0 != StatusCode::OK {} };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the peer's places were never given back");
}

#[tokio::test]
async fn the_node_holds_no_more_connections_than_it_allows() {
    let node = node_with(|l| l.max_connections = 2).await;
    let first = EvilPeer::connect(&node).await;
    let second = EvilPeer::connect(&node).await;
    // The third is refused: during its handshake, or closed right after it.
    if let Ok(third) = EvilPeer::try_connect(&node).await {
        assert!(
            third.wait_disconnected().await,
            "a third connection stayed open"
        );
    }
    assert_status(&first.request(Method::GET, VERSION, None).await, 200);
    assert_status(&second.request(Method::GET, VERSION, None).await, 200);
}

#[tokio::test]
async fn expensive_bodies_are_refused_before_they_are_parsed() {
    let node = TestNode::start().await;
    let evil = EvilPeer::connect(&node).await;
    let path = "/_matrix/federation/v1/send/junk";
    let forged = evil.authorization(&Method::PUT, path, Some(&json!({})));

    // Nearly 4 MiB of tiny values, unsigned (the signature is for another body).
    let mut flat = Vec::with_capacity(4 * 1024 * 1024);
    flat.extend_from_slice(b"{\"pdus\":[");
    while flat.len() < 4 * 1024 * 1024 - 16 {
        flat.extend_from_slice(b"0,");
    }
    flat.extend_from_slice(b"0]}");
    let resp = evil
        .request_bytes(Method::PUT, path, Some(&forged), flat.clone())
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");
    // Signed or not, the same.
    let signed_flat = format!("{{\"pdus\":[{}0]}}", "0,".repeat(300_000)).into_bytes();
    let signed_body: Value = serde_json::from_slice(&signed_flat).expect("JSON");
    let auth = evil.authorization(&Method::PUT, path, Some(&signed_body));
    let resp = evil
        .request_bytes(Method::PUT, path, Some(&auth), signed_flat)
        .await;
    assert_error(&resp, 413, "M_TOO_LARGE");

    // Nested deeper than any event.
    let deep = format!("{{\"pdus\":{}{}}}", "[".repeat(100), "]".repeat(100));
    let resp = evil
        .request_bytes(Method::PUT, path, Some(&forged), deep.into_bytes())
        .await;
    assert_error(&resp, 400, "M_BAD_JSON");

    // A header that names another server is refused before the body is looked at.
    let impostor = EvilPeer::connect(&node).await;
    let resp = evil
        .request_bytes(
            Method::PUT,
            path,
            Some(&impostor.authorization(&Method::PUT, path, Some(&json!({})))),
            b"{}".to_vec(),
        )
        .await;
    assert_error(&resp, 403, "M_FORBIDDEN");

    // A body over the size limit, declared as such: refused without waiting for it.
    let mut stream = evil.open_stream().await;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {forged}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        evil.target(),
        4 * 1024 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.flush().await.expect("flush");
    let answer = read_until_closed(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");

    // A proper transaction still goes through.
    let resp = evil
        .request(Method::PUT, path, Some(json!({ "pdus": [], "edus": [] })))
        .await;
    assert_status(&resp, 200);
}

/// Mallory of the evil server joins `room` on `node` (make_join, send_join). Returns the join
/// event's id and the auth events of a message of hers (the power levels and her join).
async fn join_mallory(evil: &EvilPeer, room: &str) -> (String, Vec<Value>) {
    let (join_id, template) = evil.join(room, "mallory").await;
    let mut auth = Vec::new();
    for id in template["event"]["auth_events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let id = id.as_str().expect("an event id");
        let event = assert_status(
            &evil
                .request(
                    Method::GET,
                    &format!("/_matrix/federation/v1/event/{}", enc(id)),
                    None,
                )
                .await,
            200,
        );
        if event["pdus"][0]["type"] == "m.room.power_levels" {
            auth.push(json!(id));
        }
    }
    auth.push(json!(join_id));
    (join_id, auth)
}

/// A message of mallory's in `room` that cites `prev` (an event nobody has).
fn message_after(
    evil: &EvilPeer,
    room: &str,
    auth: &[Value],
    prev: &str,
    depth: u64,
) -> (String, Value) {
    evil.sign_pdu(json!({
        "type": "m.room.message",
        "room_id": room,
        "sender": evil.user_id("mallory"),
        "content": { "msgtype": "m.text", "body": format!("at {depth}") },
        "origin_server_ts": now_ms(),
        "depth": depth,
        "prev_events": [prev],
        "auth_events": auth,
    }))
}

/// An event id nobody has.
fn unknown_event(n: u64) -> String {
    format!("${n:043}")
}

/// How many events the evil server handed over wait in the node's holding area.
async fn waiting_from(node: &TestNode, evil: &EvilPeer) -> usize {
    let origin = evil.server_name().to_owned();
    node.node()
        .services()
        .db
        .read(move |c| staged::count_from_origin(c, &origin))
        .await
        .expect("count")
}

#[tokio::test]
async fn a_get_missing_events_answer_is_cut_to_what_was_asked_for() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let evil = EvilPeer::connect(&node).await;
    let (_, auth) = join_mallory(&evil, &room).await;

    // Asked for the gap before an event, the evil server answers with a thousand events,
    // each after one more that nobody has; asked again, it has nothing.
    let answer: Vec<Value> = (0..1000)
        .map(|i| message_after(&evil, &room, &auth, &unknown_event(i + 1), 10).1)
        .collect();
    let answered = std::sync::atomic::AtomicBool::new(false);
    evil.answer(
        "POST",
        "/_matrix/federation/v1/get_missing_events/",
        move |_| {
            if answered.swap(true, std::sync::atomic::Ordering::SeqCst) {
                (
                    StatusCode::NOT_FOUND,
                    json!({ "errcode": "M_NOT_FOUND", "error": "No more" }),
                )
            } else {
                (StatusCode::OK, json!({ "events": answer }))
            }
        },
    );
    let (_, gap) = message_after(&evil, &room, &auth, &unknown_event(0), 11);
    let resp = evil
        .request(
            Method::PUT,
            "/_matrix/federation/v1/send/gap",
            Some(json!({ "pdus": [gap], "edus": [] })),
        )
        .await;
    assert_status(&resp, 200);

    let asked = evil
        .wait_for_request("get_missing_events", |r| {
            r.path
                .starts_with("/_matrix/federation/v1/get_missing_events/")
        })
        .await;
    let limit = asked.body["limit"].as_u64().expect("a limit");
    assert!(limit <= 100, "asked for {limit} events");
    // The answer is taken in by one write: once more than the one event sent waits, all of
    // what the node keeps of it is there (the node then waits for the history a while
    // before it asks for the state at the gap, so there is no later request to wait for).
    let waiting = tokio::time::timeout(WAIT, async {
        loop {
            let n = waiting_from(&node, &evil).await;
            if n > 1 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the answer's events were not taken in at all");
    assert!(
        waiting > 1,
        "the answer's events were not taken in at all ({waiting})"
    );
    assert!(
        waiting as u64 <= 1 + limit,
        "{waiting} events wait, more than the {limit} asked for and the one sent"
    );
    for r in evil.received() {
        if r.path
            .starts_with("/_matrix/federation/v1/get_missing_events/")
        {
            assert!(
                r.body["limit"].as_u64().is_some_and(|l| l <= limit),
                "{r:?}"
            );
        }
    }
    // The node still serves everyone.
    alice.send_text(&room, "still here").await;
}

#[tokio::test]
async fn catch_up_asks_small_questions_whatever_the_answers() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let evil = EvilPeer::connect(&node).await;
    let (_, auth) = join_mallory(&evil, &room).await;
    // The evil server leaves and comes back: the node catches up with it.
    let seed = evil.seed();
    drop(evil);
    let evil = EvilPeer::reconnect(&node, seed).await;

    // It claims one latest event, and answers every question for missing events with three
    // hundred new ones, each after twenty events nobody has.
    let tip = unknown_event(7);
    let extremities = json!({ "rooms": { room.clone(): [tip] } });
    evil.answer(
        "GET",
        "/_matrix/federation/unstable/org.neurite/extremities",
        move |_| (StatusCode::OK, extremities.clone()),
    );
    let counter = std::sync::atomic::AtomicU64::new(1_000);
    let sign = evil.pdu_signer();
    let (room_id, mallory) = (room.clone(), evil.user_id("mallory"));
    evil.answer(
        "POST",
        "/_matrix/federation/v1/get_missing_events/",
        move |_| {
            let events: Vec<Value> = (0..300)
                .map(|_| {
                    let prevs: Vec<String> = (0..20)
                        .map(|_| {
                            unknown_event(counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
                        })
                        .collect();
                    sign(json!({
                        "type": "m.room.message",
                        "room_id": room_id,
                        "sender": mallory,
                        "content": { "msgtype": "m.text", "body": "more" },
                        "origin_server_ts": now_ms(),
                        "depth": 10,
                        "prev_events": prevs,
                        "auth_events": auth,
                    }))
                })
                .collect();
            (StatusCode::OK, json!({ "events": events }))
        },
    );
    evil.wait_for_requests("get_missing_events", 3, |r| {
        r.path
            .starts_with("/_matrix/federation/v1/get_missing_events/")
    })
    .await;
    for r in evil.received() {
        if !r
            .path
            .starts_with("/_matrix/federation/v1/get_missing_events/")
        {
            continue;
        }
        assert!(r.body["limit"].as_u64().is_some_and(|l| l <= 100), "{r:?}");
        let latest = r.body["latest_events"].as_array().map_or(0, Vec::len);
        assert!(latest <= 20, "asked back from {latest} events");
    }
}

#[tokio::test]
async fn a_pdu_is_measured_with_its_signatures_and_foreign_signatures_are_dropped() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let evil = EvilPeer::connect(&node).await;
    let (join_id, auth) = join_mallory(&evil, &room).await;
    let message = |body: &str| {
        json!({
            "type": "m.room.message",
            "room_id": room,
            "sender": evil.user_id("mallory"),
            "content": { "msgtype": "m.text", "body": body },
            "origin_server_ts": now_ms(),
            "depth": 10,
            "prev_events": [join_id],
            "auth_events": auth,
        })
    };
    let send = |txn: &'static str, pdu: Value| {
        let evil = &evil;
        async move {
            let resp = evil
                .request(
                    Method::PUT,
                    &format!("/_matrix/federation/v1/send/{txn}"),
                    Some(json!({ "pdus": [pdu], "edus": [] })),
                )
                .await;
            assert_status(&resp, 200)
        }
    };

    // Signatures of servers that have no part in the event, under the 64 KiB line without
    // them and over it with them: refused.
    let (big_id, mut big) = evil.sign_pdu(message("big"));
    let junk: serde_json::Map<String, Value> = (0..1200)
        .map(|i| {
            (
                format!("junk{i:05}.example"),
                json!({ "ed25519:x": "A".repeat(40) }),
            )
        })
        .collect();
    for (server, sigs) in junk {
        big["signatures"][server] = sigs;
    }
    assert!(serde_json::to_vec(&big).expect("json").len() > 65_536);
    send("big", big).await;
    let stored_json = |id: String| {
        let db = node.node().services().db.clone();
        async move {
            db.read(move |c| neurite_core::storage::events::get_event_json(c, &id))
                .await
                .expect("read")
        }
    };
    assert!(
        stored_json(big_id).await.is_none(),
        "an event over 64 KiB with its signatures was stored"
    );

    // A few foreign signatures (and a foreign key id of the sender's): the event is taken,
    // and stored without them.
    let (small_id, mut small) = evil.sign_pdu(message("small"));
    small["signatures"]["elsewhere.example"] = json!({ "ed25519:x": "QUJD" });
    small["signatures"][evil.server_name()]["ed25519:other"] = json!("QUJD");
    let results = send("small", small).await;
    assert!(
        results["pdus"][&small_id].get("error").is_none(),
        "{results}"
    );
    let stored = alice
        .get_ok(&format!("/rooms/{}/event/{}", enc(&room), enc(&small_id)))
        .await;
    assert_eq!(stored["content"]["body"], "small");
    let json = stored_json(small_id.clone()).await.expect("stored");
    let json: Value = serde_json::from_str(&json).expect("JSON");
    let servers: Vec<&String> = json["signatures"]
        .as_object()
        .expect("signatures")
        .keys()
        .collect();
    assert_eq!(servers, vec![evil.server_name()], "{json}");
    let keys: Vec<&String> = json["signatures"][evil.server_name()]
        .as_object()
        .expect("keys")
        .keys()
        .collect();
    assert_eq!(keys, vec!["ed25519:p2p"], "{json}");
}

/// An event citing more prev events (or auth events) than any honest server would is
/// refused before it is stored or fetched for: one event cannot fork the room a thousand ways
/// and make every later state resolution slow.
#[tokio::test]
async fn an_event_citing_too_many_prev_events_is_refused() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let evil = EvilPeer::connect(&node).await;
    let (_, auth) = join_mallory(&evil, &room).await;

    let many: Vec<String> = (0..25).map(unknown_event).collect();
    let (wide_id, wide) = evil.sign_pdu(json!({
        "type": "m.room.message",
        "room_id": room,
        "sender": evil.user_id("mallory"),
        "content": { "msgtype": "m.text", "body": "wide" },
        "origin_server_ts": now_ms(),
        "depth": 10,
        "prev_events": many,
        "auth_events": auth,
    }));
    // Twenty, the most allowed, are taken in (and wait for their prev events).
    let (fine_id, fine) = evil.sign_pdu(json!({
        "type": "m.room.message",
        "room_id": room,
        "sender": evil.user_id("mallory"),
        "content": { "msgtype": "m.text", "body": "twenty" },
        "origin_server_ts": now_ms(),
        "depth": 10,
        "prev_events": many[..20],
        "auth_events": auth,
    }));
    let answer = assert_status(
        &evil
            .request(
                Method::PUT,
                "/_matrix/federation/v1/send/wide",
                Some(json!({ "pdus": [wide, fine], "edus": [] })),
            )
            .await,
        200,
    );
    let refused = answer["pdus"][&wide_id]["error"].as_str().unwrap_or("");
    assert!(refused.contains("prev_events"), "{answer}");
    assert!(answer["pdus"][&fine_id].get("error").is_none(), "{answer}");
    let (w, f) = (wide_id.clone(), fine_id.clone());
    let (wide_held, fine_held) = node
        .node()
        .services()
        .db
        .read(move |c| Ok((staged::is_staged(c, &w)?, staged::is_staged(c, &f)?)))
        .await
        .expect("read");
    assert!(!wide_held, "the wide event was held");
    assert!(fine_held, "the event with twenty prev events was not held");
}

#[tokio::test]
async fn a_room_keeps_a_bounded_number_of_rejected_events() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let evil = EvilPeer::connect(&node).await;
    let (join_id, auth) = join_mallory(&evil, &room).await;
    // Messages of a user of the evil server who never joined, each after mallory's join:
    // every one is placed in the graph and rejected.
    let power: Vec<Value> = auth
        .iter()
        .filter(|a| **a != json!(join_id))
        .cloned()
        .collect();
    let cap = neurite_core::rooms::remote::MAX_REJECTED_PER_ROOM as usize;
    let total = cap + 60;
    let mut refused = 0;
    for batch in 0..total.div_ceil(50) {
        let pdus: Vec<Value> = (batch * 50..((batch + 1) * 50).min(total))
            .map(|n| {
                evil.sign_pdu(json!({
                    "type": "m.room.message",
                    "room_id": room,
                    "sender": evil.user_id("stranger"),
                    "content": { "msgtype": "m.text", "body": format!("junk {n}") },
                    "origin_server_ts": now_ms(),
                    "depth": 100,
                    "prev_events": [join_id],
                    "auth_events": power,
                }))
                .1
            })
            .collect();
        let answer = assert_status(
            &evil
                .request(
                    Method::PUT,
                    &format!("/_matrix/federation/v1/send/junk{batch}"),
                    Some(json!({ "pdus": pdus, "edus": [] })),
                )
                .await,
            200,
        );
        let results = answer["pdus"].as_object().expect("pdu results");
        refused += results
            .values()
            .filter(|r| r.get("error").is_some())
            .count();
    }
    assert_eq!(refused, total, "every junk event is refused");
    let rid = room.clone();
    let kept = node
        .node()
        .services()
        .db
        .read(move |c| neurite_core::storage::events::count_rejected(c, &rid))
        .await
        .expect("count");
    assert_eq!(kept as usize, cap, "rejected events kept beyond the bound");
    // The room goes on for its members.
    let sent = alice.send_text(&room, "still here").await;
    assert!(sent.starts_with('$'));
}

#[tokio::test]
async fn a_burst_of_streams_from_other_peers_drops_no_request_of_an_honest_one() {
    let node = TestNode::start().await;
    let mut flooders = Vec::new();
    for _ in 0..3 {
        flooders.push(EvilPeer::connect(&node).await);
    }
    let honest = EvilPeer::connect(&node).await;
    let mut failures = Vec::new();
    for _ in 0..3 {
        // Each flooding peer opens 60 streams at once and holds them without sending a byte
        // (180 in all, past what the node serves at once), while the honest peer sends 12
        // requests at once, each on a stream of its own and without trying again.
        let flood = futures::future::join_all(
            flooders
                .iter()
                .map(|f| futures::future::join_all((0..60).map(|_| f.try_open_stream()))),
        );
        let requests =
            futures::future::join_all((0..12).map(|_| {
                tokio::time::timeout(WAIT, honest.try_request(Method::GET, VERSION, None))
            }));
        let (held, answers) = tokio::join!(flood, requests);
        for answer in answers {
            match answer {
                Ok(Ok((StatusCode::OK, _))) => {}
                Ok(Ok((status, body))) => failures.push(format!("{status} {body}")),
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push(format!("no answer within {WAIT:?}")),
            }
        }
        drop(held);
    }
    assert!(
        failures.is_empty(),
        "{} of 36 requests failed: {failures:?}",
        failures.len()
    );
}
