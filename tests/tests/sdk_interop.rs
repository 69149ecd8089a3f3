//! matrix-rust-sdk (matrix-sdk and matrix-sdk-ui 0.18, Element X's engine) against a `neurite`
//! process: builds the `tests/sdk-interop` program (its own cargo workspace and lock file),
//! starts a node with open registration and runs the program against it. The program checks
//! the room list, names, invites, encryption state and an encrypted exchange, and says what was
//! missing when it fails (see `tests/sdk-interop/README.md`).
//!
//! Needs the `neurite` binary (`cargo test --workspace` builds it; otherwise `cargo build -p
//! neurite-demo` or `NEURITE_BIN`). The program builds into `sdk-interop/` inside this target
//! directory, or into `NEURITE_SDK_TARGET_DIR`; the first build takes several minutes.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use neurite_tests::churn;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

/// Longest build of the program (a cold build of matrix-sdk on a busy 2-core machine).
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest wait for the node's listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest run of the program (each of its steps is bounded by 30 s on its own).
const RUN_TIMEOUT: Duration = Duration::from_secs(4 * 60);

/// The target directory this test was built in (`<target>/debug/deps/sdk_interop-…`).
fn own_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "debug"))
        .and_then(Path::parent)
        .expect("the test runs from <target>/debug")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_rust_sdk_room_list_and_encrypted_chat() {
    let neurite = churn::neurite_binary().unwrap_or_else(|e| panic!("{e}"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk-interop/Cargo.toml");
    let target_dir = std::env::var_os("NEURITE_SDK_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| own_target_dir().join("sdk-interop"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());

    let started = Instant::now();
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--quiet", "--locked", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let status = tokio::time::timeout(BUILD_TIMEOUT, build.status())
        .await
        .unwrap_or_else(|_| panic!("building the sdk interop took over {BUILD_TIMEOUT:?}"))
        .expect("run cargo build");
    assert!(
        status.success(),
        "building the sdk interop failed: {status}"
    );
    println!(
        "sdk interop built in {:.0} s (into {})",
        started.elapsed().as_secs_f64(),
        target_dir.display()
    );
    let program = target_dir.join(format!(
        "debug/neurite-sdk-interop{}",
        std::env::consts::EXE_SUFFIX
    ));

    let data = tempfile::tempdir().expect("data dir");
    let mut node = Command::new(&neurite)
        .arg("run")
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--registration",
            "open",
            "--no-mdns",
            "--client-addr",
            "127.0.0.1:0",
            "--insecure-fast-passwords",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", neurite.display()));
    let mut lines = BufReader::new(node.stdout.take().expect("piped stdout")).lines();
    let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no listening line from the node within {START_TIMEOUT:?}"))
        .expect("read the node's stdout")
        .expect("the node exited before listening");
    let listening: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let url = listening["client_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no client_url in {line}"))
        .to_owned();
    // Keep reading so that the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let run = Command::new(&program)
        .arg(&url)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the sdk interop ran over {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    node.kill().await.expect("stop the node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    assert!(
        output.status.success(),
        "the sdk interop failed ({}):\n{stdout}{stderr}",
        output.status
    );
    assert!(
        stdout.contains("sliding sync interop: ok"),
        "the sdk interop did not finish:\n{stdout}{stderr}"
    );
}
