//! Redactions in rooms of version 11 and later carry `redacts` in their content; every place
//! that serves events to clients also puts it at the top level, where clients written for
//! earlier versions (matrix-nio) look for it.

use std::time::Duration;

use neurite_tests::{TestNode, User, enc, timeline};
use serde_json::{Value, json};

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// Sends a message into a new room of `version` and redacts it; returns
/// `(room, message, redaction, since)` with `since` a sync token from before the redaction.
async fn redacted_message(user: &User, version: &str) -> (String, String, String, String) {
    let room = user.create_room(json!({ "room_version": version })).await;
    let message = user.send_text(&room, "oops").await;
    let since = user.sync(None, 0).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let redaction = user
        .put_ok(
            &format!(
                "/rooms/{}/redact/{}/{}",
                enc(&room),
                enc(&message),
                neurite_tests::fresh_txn()
            ),
            json!({ "reason": "wrong room" }),
        )
        .await["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned();
    (room, message, redaction, since)
}

fn find<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event_id"] == id)
        .unwrap_or_else(|| panic!("{id} missing from {events:?}"))
}

fn assert_names(event: &Value, message: &str, where_: &str) {
    assert_eq!(event["type"], "m.room.redaction", "{where_}: {event}");
    assert_eq!(event["redacts"], message, "{where_}: top level: {event}");
}

#[tokio::test]
async fn redactions_of_v12_rooms_name_the_event_at_the_top_level_too() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let (room, message, redaction, since) = redacted_message(&alice, "12").await;

    let synced = alice
        .sync_until(Some(&since), |s| {
            timeline(s, &room)
                .iter()
                .any(|e| e["event_id"] == redaction)
        })
        .await;
    let events: Vec<Value> = timeline(&synced, &room).into_iter().cloned().collect();
    let ev = find(&events, &redaction);
    assert_names(ev, &message, "/sync");
    assert_eq!(ev["content"]["redacts"], message, "content keeps it: {ev}");

    let page = alice
        .messages(&room, &[("dir", "b"), ("limit", "20")])
        .await;
    let chunk = page["chunk"].as_array().expect("chunk").clone();
    assert_names(find(&chunk, &redaction), &message, "/messages");
    // The message itself is served redacted, naming its redaction.
    let redacted = find(&chunk, &message);
    assert_eq!(redacted["content"], json!({}), "{redacted}");
    assert_eq!(
        redacted["unsigned"]["redacted_because"]["redacts"], message,
        "{redacted}"
    );

    let context = alice
        .get_ok(&format!(
            "/rooms/{}/context/{}?limit=2",
            enc(&room),
            enc(&redaction)
        ))
        .await;
    assert_names(&context["event"], &message, "/context");

    let single = alice
        .get_ok(&format!("/rooms/{}/event/{}", enc(&room), enc(&redaction)))
        .await;
    assert_names(&single, &message, "/event");

    let body = json!({ "room_subscriptions": { &room: { "timeline_limit": 5 } } });
    let resp = alice.post_ok(&format!("{SLIDING}?timeout=0"), body).await;
    let events = resp["rooms"][&room]["timeline"]
        .as_array()
        .expect("sliding sync timeline")
        .clone();
    assert_names(find(&events, &redaction), &message, "sliding sync");
}

#[tokio::test]
async fn redactions_of_older_rooms_are_unchanged() {
    let node = TestNode::start().await;
    let alice = node.register("alice").await;
    let (room, message, redaction, _) = redacted_message(&alice, "10").await;
    let single = alice
        .get_ok(&format!("/rooms/{}/event/{}", enc(&room), enc(&redaction)))
        .await;
    assert_names(&single, &message, "/event");
    assert!(
        single["content"].get("redacts").is_none(),
        "nothing is added to the content of a v10 redaction: {single}"
    );
}

/// matrix-nio 0.26 reads only the top-level `redacts`: in a v12 room it must still see a
/// `RedactionEvent` naming the message, through /sync, /messages, /context and /event.
/// Needs NEURITE_PYTHON (set by tests/run.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_sees_v12_redactions() {
    let python = std::env::var("NEURITE_PYTHON").expect(
        "NEURITE_PYTHON is not set: run the tests with tests/run.sh, which installs matrix-nio and sets it",
    );
    let node = TestNode::start().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/nio/redaction.py");
    let mut command = std::process::Command::new(python);
    command.arg(script).arg(&node.url);
    let child = tokio::task::spawn_blocking(move || command.output());
    // The script bounds itself; this is a second bound.
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the nio script finished within 120 s")
        .expect("the script's thread")
        .expect("the nio script ran");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "nio redaction check failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("PASS"), "{stdout}");
}
