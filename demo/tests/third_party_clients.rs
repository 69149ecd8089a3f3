//! Unmodified third-party Matrix clients (matrix-nio, matrix-js-sdk) chat through a real
//! `neurite run --registration open` process; matrix-nio also end-to-end encrypted.
//!
//! The clients are installed by `tests/clients/install.sh`, which `tests/run.sh` runs first;
//! it exports NEURITE_PYTHON (the venv's python with matrix-nio).

mod common;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::NodeProcess;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Runs a client script against a fresh node; fails with its output if it does not exit 0.
fn run_client(program: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &["--registration", "open", "--insecure-fast-passwords"],
    );
    let mut child = Command::new(program)
        .arg(repo_root().join(script))
        .arg(&node.client_url)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} {script}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("{script} failed ({s}):\n{stdout}\n{stderr}"),
        None => panic!("{script} did not finish within {CLIENT_TIMEOUT:?}:\n{stdout}\n{stderr}"),
    }
    assert!(
        node.terminate(),
        "node should shut down cleanly after the client run"
    );
}

#[test]
fn matrix_nio_registers_invites_joins_and_chats() {
    let python = std::env::var("NEURITE_PYTHON").expect(
        "NEURITE_PYTHON is not set: run the tests with tests/run.sh, which installs matrix-nio and sets it",
    );
    run_client(&python, "tests/clients/nio/chat.py");
}

#[test]
fn matrix_nio_exchanges_end_to_end_encrypted_messages() {
    let python = std::env::var("NEURITE_PYTHON").expect(
        "NEURITE_PYTHON is not set: run the tests with tests/run.sh, which installs matrix-nio and sets it",
    );
    run_client(&python, "tests/clients/nio/e2ee_chat.py");
}

#[test]
fn matrix_js_sdk_registers_invites_joins_and_chats() {
    let modules = repo_root().join("tests/clients/js/node_modules/matrix-js-sdk");
    assert!(
        modules.exists(),
        "matrix-js-sdk is not installed: run the tests with tests/run.sh, which installs it"
    );
    run_client("node", "tests/clients/js/chat.mjs");
}

#[test]
fn matrix_js_sdk_reads_edits_and_threads_from_bundled_aggregations() {
    let modules = repo_root().join("tests/clients/js/node_modules/matrix-js-sdk");
    assert!(
        modules.exists(),
        "matrix-js-sdk is not installed: run the tests with tests/run.sh, which installs it"
    );
    run_client("node", "tests/clients/js/threads.mjs");
}
