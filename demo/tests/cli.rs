//! The `neurite` command: durability across `kill -9`, offline registration, clean shutdown.

mod common;

use common::{NodeProcess, call};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = NodeProcess::start(
        dir.path(),
        &["--registration", "open", "--insecure-fast-passwords"],
    );
    let base = node.client_url.clone();
    let (s, reg) = call(
        &http,
        Method::POST,
        &format!("{base}/_matrix/client/v3/register"),
        None,
        Some(json!({ "username": "alice", "password": "pw", "auth": { "type": "m.login.dummy" } })),
    )
    .await;
    assert_eq!(s, 200, "{reg}");
    let token = reg["access_token"].as_str().unwrap().to_owned();
    let (s, room) = call(
        &http,
        Method::POST,
        &format!("{base}/_matrix/client/v3/createRoom"),
        Some(&token),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let mut sent = Vec::new();
    for i in 0..25 {
        let url = format!("{base}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/txn{i}");
        let (s, ev) = call(
            &http,
            Method::PUT,
            &url,
            Some(&token),
            Some(json!({ "msgtype": "m.text", "body": format!("m{i}") })),
        )
        .await;
        assert_eq!(s, 200, "{ev}");
        sent.push(ev["event_id"].as_str().unwrap().to_owned());
    }
    node.kill_hard();

    let node = NodeProcess::start(
        dir.path(),
        &["--registration", "open", "--insecure-fast-passwords"],
    );
    let base = node.client_url.clone();
    // The old access token still works after the restart.
    let url = format!("{base}/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100");
    let (s, page) = call(&http, Method::GET, &url, Some(&token), None).await;
    assert_eq!(s, 200, "{page}");
    let stored: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    for id in &sent {
        assert!(
            stored.contains(&id.as_str()),
            "acknowledged event {id} lost after kill -9"
        );
    }
    assert!(node.terminate(), "neurite should exit 0 on SIGTERM");
}

#[test]
fn sigterm_right_after_the_listening_line_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=5 {
        // The signal goes as soon as the line is read: the handler must be in place by then.
        let node = NodeProcess::start(dir.path(), &[]);
        assert!(node.terminate(), "round {round}: no clean exit on SIGTERM");
        // A clean shutdown closed the database: its last connection removed the WAL.
        assert!(
            !dir.path().join("neurite.db-wal").exists(),
            "round {round}: the database was not closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn register_command_creates_accounts_while_registration_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_neurite"))
        .args(["register", "--data-dir"])
        .arg(dir.path())
        .args(["carol", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"hunter2\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line["user_id"].as_str().unwrap().starts_with("@carol:"));

    let node = NodeProcess::start(dir.path(), &[]);
    let http = reqwest::Client::new();
    let base = node.client_url.clone();
    let (s, body) = call(
        &http,
        Method::POST,
        &format!("{base}/_matrix/client/v3/register"),
        None,
        Some(
            json!({ "username": "mallory", "password": "pw", "auth": { "type": "m.login.dummy" } }),
        ),
    )
    .await;
    assert_eq!(s, 403, "registration must be closed by default: {body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let (s, body) = call(
        &http,
        Method::POST,
        &format!("{base}/_matrix/client/v3/login"),
        None,
        Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": "hunter2" })),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["user_id"], line["user_id"]);
    // The server name is stable across restarts of the same data directory.
    assert_eq!(
        body["user_id"].as_str().unwrap().split(':').nth(1).unwrap(),
        node.server_name
    );
    assert!(node.terminate());
}

#[test]
fn help_documents_every_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_neurite"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--client-addr",
        "--registration",
        "--no-mdns",
        "--p2p-listen",
        "--peer",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}: {help}");
    }
}

#[test]
fn peers_command_lists_an_empty_address_book() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_neurite"))
        .args(["peers", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "a new node knows no peers");
}
