//! A hostile app on the same phone: it can reach the client API on `127.0.0.1` like the chat
//! app can, and so can any web page open in the phone's browser. Each test performs one
//! attack over the real client API and checks that the node refuses it, stays up, and keeps
//! what it had.

use std::{path::Path, time::Duration};

use neurite_core::{RateLimit, RateLimits, RegistrationMode, uia::MAX_SESSIONS};
use neurite_tests::{
    TestNode, assert_error, assert_status, enc, png::gradient_png, png::png_size, split_mxc,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A bucket that does not refill during a test.
fn no_refill(burst: u32) -> RateLimit {
    RateLimit {
        burst,
        every: Duration::from_secs(3600),
    }
}

fn login_body(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    })
}

/// Checks a `429 M_LIMIT_EXCEEDED` answer: a positive `retry_after_ms` and a `Retry-After`.
fn assert_limited(resp: &neurite_tests::RawResponse) {
    let body = assert_error(&resp.as_error(), 429, "M_LIMIT_EXCEEDED");
    let retry = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(retry > 0, "{body}");
    let header: u64 = resp.header("retry-after").parse().expect("Retry-After");
    assert!(header >= 1);
}

async fn post_raw(
    node: &TestNode,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> neurite_tests::RawResponse {
    node.raw(
        Method::POST,
        path,
        token,
        &[("content-type", "application/json")],
        Some(body.to_string().into_bytes()),
    )
    .await
}

// ---------------------------------------------------------------- web pages (CORS)

#[tokio::test]
async fn pages_of_other_origins_cannot_use_a_stolen_token() {
    let node =
        TestNode::start_with(|c| c.cors_origins = vec!["https://chat.example.org".into()]).await;
    let alice = node.register("alice").await;
    let whoami = "/_matrix/client/v3/account/whoami";

    // A page on another site that got hold of the token: refused, and no CORS header that
    // would let the browser show it the answer.
    let resp = node
        .raw(
            Method::GET,
            whoami,
            Some(&alice.token),
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
    assert_error(&resp.as_error(), 403, "M_FORBIDDEN");
    assert_eq!(resp.header("access-control-allow-origin"), "");
    // Its preflight is refused too.
    let resp = node
        .raw(
            Method::OPTIONS,
            "/_matrix/client/v3/createRoom",
            None,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
            ],
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.header("access-control-allow-origin"), "");
    // A form post (no preflight) that would create a room does nothing.
    let resp = node
        .raw(
            Method::POST,
            &format!("/_matrix/client/v3/createRoom?access_token={}", alice.token),
            None,
            &[
                ("origin", "https://evil.example"),
                ("content-type", "text/plain"),
            ],
            Some(b"{\"name\":\"pwned\"}".to_vec()),
        )
        .await;
    assert_error(&resp.as_error(), 403, "M_FORBIDDEN");
    let rooms = alice.get_ok("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(rooms["joined_rooms"], json!([]));
    // A sandboxed frame or a file sends `Origin: null`.
    let resp = node
        .raw(
            Method::GET,
            whoami,
            Some(&alice.token),
            &[("origin", "null")],
            None,
        )
        .await;
    assert_error(&resp.as_error(), 403, "M_FORBIDDEN");

    // A page on a DNS name rebound to 127.0.0.1 is same-origin to the browser; the node
    // answers only requests addressed to an IP address or localhost.
    let resp = node
        .raw(
            Method::GET,
            whoami,
            Some(&alice.token),
            &[("host", "rebind.evil.example:8008")],
            None,
        )
        .await;
    assert_error(&resp.as_error(), 403, "M_FORBIDDEN");

    // A web client served from loopback, or from a configured origin, works as usual.
    for origin in [
        "http://localhost:8080",
        "http://127.0.0.1:3000",
        "https://chat.example.org",
    ] {
        let resp = node
            .raw(
                Method::GET,
                whoami,
                Some(&alice.token),
                &[("origin", origin)],
                None,
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{origin}");
        assert_eq!(resp.json()["user_id"], alice.user_id.as_str());
        assert_eq!(resp.header("access-control-allow-origin"), origin);
        let preflight = node
            .raw(
                Method::OPTIONS,
                "/_matrix/client/v3/createRoom",
                None,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization,content-type",
                    ),
                ],
                None,
            )
            .await;
        assert!(
            preflight.status.is_success(),
            "{origin}: {}",
            preflight.status
        );
        assert_eq!(preflight.header("access-control-allow-origin"), origin);
    }
    // Native clients send no Origin.
    let resp = node
        .raw(Method::GET, whoami, Some(&alice.token), &[], None)
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("access-control-allow-origin"), "");
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn password_guessing_is_rate_limited_per_user_and_for_the_node() {
    let node = TestNode::start_with(|c| {
        c.rate_limits = RateLimits {
            password_per_user: no_refill(3),
            password_global: no_refill(12),
            registration: RateLimit::UNLIMITED,
        }
    })
    .await;
    let alice = node.register("alice").await;
    node.register("bob").await;
    let login = "/_matrix/client/v3/login";

    // Right passwords give their attempt back: more logins than the burst all work.
    for _ in 0..5 {
        node.login("alice", "correct horse").await;
    }
    // Three wrong guesses are answered; the fourth, and even the right password after it, are
    // refused without a check.
    for _ in 0..3 {
        let resp = post_raw(&node, login, None, login_body("alice", "guess")).await;
        assert_error(&resp.as_error(), 403, "M_FORBIDDEN");
    }
    let resp = post_raw(&node, login, None, login_body("alice", "guess")).await;
    assert_limited(&resp);
    let resp = post_raw(&node, login, None, login_body("alice", "correct horse")).await;
    assert_limited(&resp);
    // The password stages of user-interactive auth count against the same user.
    let resp = post_raw(
        &node,
        "/_matrix/client/v3/account/password",
        Some(&alice.token),
        json!({
            "new_password": "another horse",
            "auth": { "type": "m.login.password", "password": "guess",
                      "identifier": { "type": "m.id.user", "user": "alice" } },
        }),
    )
    .await;
    assert_limited(&resp);
    let resp = post_raw(
        &node,
        "/_matrix/client/v3/account/deactivate",
        Some(&alice.token),
        json!({ "auth": { "type": "m.login.password", "password": "guess",
                          "identifier": { "type": "m.id.user", "user": "alice" } } }),
    )
    .await;
    assert_limited(&resp);
    let resp = post_raw(
        &node,
        "/_matrix/client/v3/delete_devices",
        Some(&alice.token),
        json!({ "devices": [alice.device_id],
                "auth": { "type": "m.login.password", "password": "guess" } }),
    )
    .await;
    assert_limited(&resp);
    // Nothing was changed: alice's token still works, her password is the old one.
    assert_status(&alice.get("/_matrix/client/v3/account/whoami").await, 200);

    // Bob is not locked out by guesses at alice.
    node.login("bob", "correct horse").await;
    // Guessing at many users runs into the node's limit: 5 right logins and 3 wrong ones of
    // alice, one of bob, so 3 checks are left for everybody.
    for name in ["carol", "dave", "erin"] {
        let resp = post_raw(&node, login, None, login_body(name, "guess")).await;
        assert_error(&resp.as_error(), 403, "M_FORBIDDEN");
    }
    let resp = post_raw(&node, login, None, login_body("bob", "correct horse")).await;
    assert_limited(&resp);
    let resp = post_raw(&node, login, None, login_body("frank", "guess")).await;
    assert_limited(&resp);
}

#[tokio::test]
async fn registration_token_guessing_is_rate_limited() {
    let token = "a-registration-token-nobody-guesses";
    let node = TestNode::start_with(|c| {
        c.registration = RegistrationMode::Token(token.into());
        c.rate_limits = RateLimits {
            registration: no_refill(4),
            ..RateLimits::UNLIMITED
        };
    })
    .await;
    let validity = |t: &str| {
        format!(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token={}",
            enc(t)
        )
    };
    let register = |t: &str, name: &str| {
        json!({
            "username": name, "password": "correct horse",
            "auth": { "type": "m.login.registration_token", "token": t },
        })
    };
    for guess in ["a", "b"] {
        let resp = node
            .raw(Method::GET, &validity(guess), None, &[], None)
            .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.json()["valid"], false);
    }
    let resp = post_raw(
        &node,
        "/_matrix/client/v3/register",
        None,
        register("c", "mallory"),
    )
    .await;
    assert_error(&resp.as_error(), 401, "M_FORBIDDEN");
    // The fourth attempt registers with the right token.
    let resp = post_raw(
        &node,
        "/_matrix/client/v3/register",
        None,
        register(token, "alice"),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.json());
    // Then every check is refused, the right token too; the first request of a flow (no
    // `auth`) still gets its challenge.
    assert_limited(
        &node
            .raw(Method::GET, &validity(token), None, &[], None)
            .await,
    );
    let resp = post_raw(
        &node,
        "/_matrix/client/v3/register",
        None,
        register(token, "bob"),
    )
    .await;
    assert_limited(&resp);
    let resp = post_raw(
        &node,
        "/_matrix/client/v3/register",
        None,
        json!({ "username": "bob", "password": "correct horse" }),
    )
    .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    // Alice's account is there; bob's and mallory's are not.
    node.login("alice", "correct horse").await;
    for name in ["bob", "mallory"] {
        let resp = node
            .raw(
                Method::GET,
                &format!("/_matrix/client/v3/register/available?username={name}"),
                None,
                &[],
                None,
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{name}");
    }
}

#[tokio::test]
async fn a_flood_of_registration_challenges_keeps_few_sessions() {
    let node = TestNode::start().await;
    for _ in 0..(MAX_SESSIONS + 100) {
        let (status, body) = node
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(json!({ "username": "mallory", "password": "x" })),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["session"].is_string());
    }
    assert!(node.node().services().uia.len() <= MAX_SESSIONS);
    // Registration still works afterwards.
    node.register("alice").await;
}

// ---------------------------------------------------------------- media

/// Every file under a folder, recursively.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let path = e.expect("dir entry").path();
            if path.is_dir() { files_under(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test]
async fn asking_for_every_thumbnail_size_stores_only_a_few() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let png = gradient_png(1000, 800);
    let mxc = alice.upload_ok(&png, None, Some("image/png")).await;
    let (server, media) = split_mxc(&mxc);
    let blobs = node.dir.path().join("media/blobs");
    assert_eq!(files_under(&blobs), 1);

    // The legacy route needs no token.
    let mut sizes = std::collections::BTreeSet::new();
    for i in 1..=40u32 {
        for method in ["crop", "scale"] {
            let path = format!(
                "/_matrix/media/v3/thumbnail/{}/{}?width={}&height={}&method={method}",
                enc(&server),
                enc(&media),
                i * 23,
                i * 17
            );
            let resp = node.raw(Method::GET, &path, None, &[], None).await;
            assert_eq!(resp.status, StatusCode::OK, "{path}");
            sizes.insert(png_size(&resp.body));
        }
    }
    // 32×32 and 96×96 cropped; 320×256, 640×512 and 800×640 scaled (the aspect ratio kept).
    let expected = [(32, 32), (96, 96), (320, 256), (640, 512), (800, 640)];
    assert_eq!(sizes, expected.into_iter().collect());
    // The original and one file per size.
    assert_eq!(files_under(&blobs), 1 + expected.len());
}

#[tokio::test]
async fn uploads_stop_at_the_user_quota_and_the_node_quota() {
    let node = TestNode::start_with(|c| {
        c.media_quota_per_user = 100_000;
        c.media_quota_total = 230_000;
    })
    .await;
    let alice = node.register("alice").await;
    let bob = node.register("bob").await;
    let carol = node.register("carol").await;
    let blob = |n: u8| vec![n; 60_000];

    let first = alice.upload_ok(&blob(1), None, None).await;
    // A second 60 kB would take alice to 120 kB.
    let (status, body) = alice.upload(&blob(2), None, None).await;
    assert_error(&(status, body), 413, "M_TOO_LARGE");
    // What fits is still taken.
    alice.upload_ok(&[3; 30_000], None, None).await;
    // The same bytes again count again (each upload is the user's).
    let (status, body) = alice.upload(&blob(1), None, None).await;
    assert_error(&(status, body), 413, "M_TOO_LARGE");

    // The node: 90 kB of alice and 60 kB each of bob and carol leave 20 kB, less than what
    // is left of carol's own quota: the node's is the one she runs into.
    bob.upload_ok(&blob(4), None, None).await;
    carol.upload_ok(&blob(5), None, None).await;
    let (status, body) = carol.upload(&blob(6), None, None).await;
    let body = assert_error(&(status, body), 413, "M_TOO_LARGE");
    assert!(
        body["error"].as_str().unwrap_or("").contains("server"),
        "{body}"
    );
    // The asynchronous upload route keeps to the quota as well.
    let created = carol.post_ok("/_matrix/media/v1/create", json!({})).await;
    let (server, media) = split_mxc(created["content_uri"].as_str().expect("content_uri"));
    let resp = carol
        .raw(
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{}/{}", enc(&server), enc(&media)),
            &[("content-type", "application/octet-stream")],
            Some(blob(7)),
        )
        .await;
    assert_error(&resp.as_error(), 413, "M_TOO_LARGE");

    // Nothing stored was lost, and refused uploads left no files behind.
    let (server, media) = split_mxc(&first);
    let resp = alice
        .get_raw(&format!(
            "/_matrix/client/v1/media/download/{}/{}",
            enc(&server),
            enc(&media)
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, blob(1));
    assert_eq!(files_under(&node.dir.path().join("media/tmp")), 0);
    assert_eq!(files_under(&node.dir.path().join("media/blobs")), 4);
}

// ---------------------------------------------------------------- filters

#[tokio::test]
async fn a_filter_with_many_stars_answers_at_once() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let long_type = "a".repeat(200);
    let long_event = alice.send_event(&room, &long_type, json!({})).await;
    let message = alice.send_text(&room, "hello").await;

    // The event ids of the room's timeline in a sync filtered to `types`.
    let timeline_of = |types: Value| {
        let (alice, room) = (&alice, &room);
        async move {
            let filter = json!({ "room": { "timeline": { "types": types } } });
            let sync = tokio::time::timeout(
                neurite_tests::WAIT,
                alice.get_ok(&format!(
                    "/_matrix/client/v3/sync?filter={}",
                    enc(&filter.to_string())
                )),
            )
            .await
            .expect("the sync answers");
            neurite_tests::timeline(&sync, room)
                .iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                .collect::<Vec<String>>()
        }
    };

    // Backtracking would try about 200^8 ways to place these stars.
    let pathological = "a*a*a*a*a*a*a*a*b";
    let ids = timeline_of(json!([pathological, "m.room.message"])).await;
    assert!(ids.contains(&message), "{ids:?}");
    assert!(!ids.contains(&long_event), "{ids:?}");

    // The same number of stars ending in `a` matches it.
    let ids = timeline_of(json!(["a*a*a*a*a*a*a*a*a"])).await;
    assert_eq!(ids, vec![long_event.clone()]);
}

// ---------------------------------------------------------------- server names

#[tokio::test]
async fn a_server_name_in_upper_case_names_nobody() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let upper_self = node.server_name().to_ascii_uppercase();

    // Logging in as `@alice:<OUR NAME>` is not alice.
    let resp = post_raw(
        &node,
        "/_matrix/client/v3/login",
        None,
        login_body(&format!("@alice:{upper_self}"), "correct horse"),
    )
    .await;
    assert_error(&resp.as_error(), 403, "M_FORBIDDEN");

    // Inviting a user of a peer spelled in upper case is refused before any network use.
    let peer = neurite_core::identity::Identity::from_seed(&[42u8; 32]).expect("identity");
    let upper_peer = peer.server_name().as_str().to_ascii_uppercase();
    let (status, body) = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({ "user_id": format!("@bob:{upper_peer}") }),
        )
        .await;
    assert_error(&(status, body), 400, "M_INVALID_PARAM");
    // The room is as it was: alice alone, nobody invited.
    let members = alice
        .get_ok(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room)))
        .await;
    assert_eq!(members["chunk"].as_array().map(Vec::len), Some(1));
}
