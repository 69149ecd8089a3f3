//! mDNS for real: two `neurite run` processes in two network namespaces joined by a veth
//! pair, mDNS on and no static peers, find each other and chat.
//!
//! Needs root and `ip netns`; otherwise the test prints why and passes without running.
//! Nothing touches the machine's own interfaces: both ends of the veth pair live in the
//! test's namespaces, which are deleted at the end. The client API of each node listens on
//! the loopback of its namespace and is spoken to with `curl` run inside that namespace.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Why the test cannot run here, if it cannot.
fn unsupported() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("`ip netns` is not available".into()),
    }
    match Command::new("curl").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("curl is not installed".into()),
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {}", args.join(" "));
}

/// Two namespaces and the veth pair between them; removed on drop.
struct Link {
    names: [String; 2],
}

impl Link {
    fn new(tag: &str) -> Self {
        let names = [format!("nrt{tag}a"), format!("nrt{tag}b")];
        for ns in &names {
            // A namespace left behind by an interrupted run of this same test.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Both ends are created inside the first namespace; one moves to the second.
        ip(&[
            "-n", &names[0], "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        ip(&["-n", &names[0], "link", "set", "veth1", "netns", &names[1]]);
        for (i, ns) in names.iter().enumerate() {
            let dev = format!("veth{i}");
            let addr = format!("10.213.0.{}/24", i + 1);
            ip(&["-n", ns, "addr", "add", &addr, "dev", &dev]);
            ip(&["-n", ns, "link", "set", &dev, "up", "multicast", "on"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", &dev]);
        }
        Self { names }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A `neurite run` process inside a namespace.
struct Node {
    child: Child,
    ns: String,
    url: String,
    server_name: String,
}

impl Node {
    fn start(ns: &str, addr: &str, data_dir: &std::path::Path) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_neurite"))
            .args(["run", "--data-dir"])
            .arg(data_dir)
            .args([
                "--client-addr",
                "127.0.0.1:0",
                "--registration",
                "open",
                "--insecure-fast-passwords",
                "--p2p-listen",
                &format!("/ip4/{addr}/tcp/0"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn neurite");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(WAIT).expect("listening line");
        let v: Value = serde_json::from_str(&line).expect("JSON listening line");
        Self {
            child,
            ns: ns.to_owned(),
            url: v["client_url"].as_str().expect("client_url").to_owned(),
            server_name: v["server_name"].as_str().expect("server_name").to_owned(),
        }
    }

    /// One client-server API request, made from inside the node's namespace.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "30"])
            .args(["-X", method, "-H", "Content-Type: application/json"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["--data", &b.to_string()]);
        }
        let out = cmd
            .arg(format!("{}/_matrix/client/v3{path}", self.url))
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn register(&self, name: &str) -> (String, String) {
        let r = self.call(
            "POST",
            "/register",
            None,
            Some(
                json!({ "username": name, "password": "pw", "auth": { "type": "m.login.dummy" } }),
            ),
        );
        (
            r["user_id"].as_str().expect("user_id").to_owned(),
            r["access_token"].as_str().expect("token").to_owned(),
        )
    }

    /// Long-polls /sync until `pred` holds (bounded).
    fn sync_until(&self, token: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut since = String::new();
        loop {
            let path = if since.is_empty() {
                "/sync?timeout=1000".to_owned()
            } else {
                format!("/sync?timeout=1000&since={since}")
            };
            let s = self.call("GET", &path, Some(token), None);
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "sync condition not met");
            since = s["next_batch"].as_str().unwrap_or_default().to_owned();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enc(s: &str) -> String {
    s.replace('!', "%21")
        .replace(':', "%3A")
        .replace('@', "%40")
}

#[test]
fn two_nodes_in_namespaces_discover_each_other_with_mdns_and_chat() {
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return;
    }
    let link = Link::new(&format!("{}", std::process::id() % 100_000));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let started = Instant::now();
    let a = Node::start(&link.names[0], "10.213.0.1", dirs[0].path());
    let b = Node::start(&link.names[1], "10.213.0.2", dirs[1].path());

    let (alice, alice_token) = a.register("alice");
    let (bob, bob_token) = b.register("bob");
    let room = a.call(
        "POST",
        "/createRoom",
        Some(&alice_token),
        Some(json!({ "preset": "private_chat", "name": "mDNS" })),
    )["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    // The invite has to travel to B: only possible once mDNS found it.
    let invited = a.call(
        "POST",
        &format!("/rooms/{}/invite", enc(&room)),
        Some(&alice_token),
        Some(json!({ "user_id": bob })),
    );
    assert!(
        invited.as_object().is_some_and(|o| o.is_empty()),
        "{invited}"
    );
    b.sync_until(&bob_token, |s| s["rooms"]["invite"][&room].is_object());
    let joined = b.call(
        "POST",
        &format!("/join/{}", enc(&room)),
        Some(&bob_token),
        Some(json!({})),
    );
    assert_eq!(joined["room_id"], room.as_str(), "{joined}");
    let sent = a.call(
        "PUT",
        &format!("/rooms/{}/send/m.room.message/t1", enc(&room)),
        Some(&alice_token),
        Some(json!({ "msgtype": "m.text", "body": "found you by mDNS" })),
    );
    assert!(sent["event_id"].is_string(), "{sent}");
    b.sync_until(&bob_token, |s| {
        s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_some_and(|ev| {
                ev.iter()
                    .any(|e| e["content"]["body"] == "found you by mDNS")
            })
    });
    eprintln!(
        "{} and {} discovered each other and chatted in {:?}",
        a.server_name,
        b.server_name,
        started.elapsed()
    );
    let _ = alice;

    // A's address book says how it found B.
    drop(a);
    let peers = Command::new(env!("CARGO_BIN_EXE_neurite"))
        .args(["peers", "--data-dir"])
        .arg(dirs[0].path())
        .output()
        .expect("neurite peers");
    let peers = String::from_utf8_lossy(&peers.stdout);
    let b_entry = peers
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|p| p["server_name"] == b.server_name.as_str())
        .unwrap_or_else(|| panic!("B in A's address book: {peers}"));
    assert_eq!(b_entry["discovered"], "mdns", "{b_entry}");
}
