//! Across NATs for real: `demo/nat-mesh.sh` builds a relay on an "internet" segment and two
//! homes, each behind a router namespace that masquerades (nftables) and drops connections
//! started from outside; one `neurite run` in each home keeps a reservation on the relay,
//! the second is given the first's circuit address, and their users chat both ways.
//!
//! Run twice: with NATs that keep the source port (hole punching must upgrade the path to
//! direct) and with NATs that randomise it (hole punching cannot work; the relay must carry
//! the chat). Needs root, `ip netns`, `nft`, `curl` and `python3`; otherwise each test prints
//! why and passes without running. Nothing touches the machine's own interfaces: the script
//! creates and deletes its namespaces.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

/// Why the test cannot run here, if it cannot.
fn unsupported() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root".into());
    }
    for (tool, arg) in [
        ("ip", "-V"),
        ("nft", "--version"),
        ("curl", "--version"),
        ("python3", "--version"),
    ] {
        match Command::new(tool).arg(arg).stdout(Stdio::null()).output() {
            Ok(o) if o.status.success() => {}
            _ => return Some(format!("{tool} is not installed")),
        }
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        _ => Some("`ip netns` is not available".into()),
    }
}

/// Runs the scenario once; returns its JSON summary.
fn run(nat: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("nat-mesh.sh");
    // The script bounds each of its waits; this bounds the whole run.
    let out = Command::new("timeout")
        .arg(Duration::from_secs(240).as_secs().to_string())
        .arg("bash")
        .arg(&script)
        .args(["--nat", nat, "--messages", "3", "--neurite"])
        .arg(env!("CARGO_BIN_EXE_neurite"))
        .output()
        .expect("run nat-mesh.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nat-mesh.sh --nat {nat} failed ({}):\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let summary: Value = serde_json::from_str(last).expect("JSON summary");
    eprintln!("nat {nat}: {summary}");
    summary
}

#[test]
fn behind_port_keeping_nats_the_chat_starts_on_the_relay_and_goes_direct() {
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return;
    }
    // Hole punching is a race of two simultaneous dials; on this quiet network it has
    // succeeded in every run measured (see the README), but one repeat is allowed before the
    // test calls it a failure.
    let mut summary = run("keep");
    if summary["path"] != "direct" {
        eprintln!("no direct path on the first run; trying once more");
        summary = run("keep");
    }
    assert_eq!(summary["delivered"], true, "{summary}");
    assert_eq!(summary["path"], "direct", "{summary}");
}

#[test]
fn behind_port_randomising_nats_the_relay_carries_the_chat() {
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return;
    }
    let summary = run("random");
    assert_eq!(summary["delivered"], true, "{summary}");
    // A NAT that picks a new port for every connection leaves nothing to punch through.
    assert_eq!(summary["path"], "relayed", "{summary}");
    assert_eq!(
        summary["a_to_c_ms"].as_array().map(Vec::len),
        Some(3),
        "{summary}"
    );
}
