//! A node started and stopped twenty times in one process, on the same data directory and
//! the same ports, federating with a second node each time: every stop releases the client
//! port, the peer-to-peer port and the database at once, and nothing (threads, file handles)
//! piles up from one run to the next.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use futures::FutureExt;
use neurite_tests::{TestNode, User, has_event};
use serde_json::json;

const ROUNDS: usize = 20;
/// How long an idle blocking-pool thread of the test's runtime lives. Tokio's default (10 s)
/// would keep the threads of the last database calls around while the count is read; with a
/// short keep-alive the count settles within a fraction of a second once the node is idle.
const THREAD_KEEP_ALIVE: Duration = Duration::from_millis(100);
/// Threads a count may exceed the first one by (a worker that is just waking, say).
const THREAD_SLACK: usize = 2;
/// File descriptors a count may exceed the first one by: the peer's side of a connection
/// that it has not seen close yet, a client connection being torn down. A database left open
/// each round would add at least two per round (the database and its WAL).
const FD_SLACK: usize = 8;

/// The tests here count the whole process's threads and files: they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn twenty_restarts_release_ports_database_threads_and_files() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(THREAD_KEEP_ALIVE)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(restarts());
}

async fn restarts() {
    // The second node stays up all along; the restarted one dials it each time.
    let peer = TestNode::start().await;
    let bob = peer.register("bob").await;
    let peer_addr: neurite_core::p2p::Multiaddr = peer.node().p2p_addrs()[0].parse().unwrap();

    let client_port = free_port();
    let p2p_port = free_port();
    let mut dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().canonicalize().expect("data dir");
    let mut room = String::new();
    let mut first: Option<(usize, usize)> = None;

    for round in 1..=ROUNDS {
        let peer_addr = peer_addr.clone();
        let node = TestNode::start_in(dir, |c| {
            c.client_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
            c.p2p_listen = vec![
                format!("/ip4/127.0.0.1/tcp/{p2p_port}")
                    .parse()
                    .expect("multiaddr"),
            ];
            c.static_peers = vec![peer_addr];
        })
        .await;
        assert_eq!(node.node().client_addr().port(), client_port);

        // Work that runs background tasks on both sides: the outbox and a federation stream
        // each way, catch-up on connect, and a typing expiry that would outlive the node.
        let alice = if round == 1 {
            let alice = node.register("alice").await;
            room = alice
                .create_room(json!({ "preset": "private_chat", "invite": [bob.user_id] }))
                .await;
            bob.sync_until(None, |s| s["rooms"]["invite"][&room].is_object())
                .await;
            bob.join(&room).await;
            alice
        } else {
            node.login("alice", "correct horse").await
        };
        exchange(&alice, &bob, &room, round).await;

        let closed = node.node().services().db.closed();
        dir = node.stop().await;

        // The database is closed by the time shutdown returns: no handle is left, SQLite
        // removed the WAL on the last close, and no file of the data directory is open.
        assert!(
            closed.now_or_never().is_some(),
            "round {round}: the database is still open after shutdown"
        );
        assert!(
            !data_dir.join("neurite.db-wal").exists(),
            "round {round}: the WAL was not checkpointed away"
        );
        let held = open_files_under(&data_dir);
        assert!(held.is_empty(), "round {round}: files still open: {held:?}");
        // Both ports can be taken again at once.
        for port in [client_port, p2p_port] {
            if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                panic!("round {round}: port {port} still held after shutdown: {e}");
            }
        }

        let threads = settled_threads().await;
        let fds = open_fds();
        match first {
            None => first = Some((threads, fds)),
            Some((threads_1, fds_1)) => {
                assert!(
                    threads <= threads_1 + THREAD_SLACK,
                    "round {round}: {threads} threads, {threads_1} after the first round"
                );
                assert!(
                    fds <= fds_1 + FD_SLACK,
                    "round {round}: {fds} open files, {fds_1} after the first round"
                );
            }
        }
    }
    let (threads_1, fds_1) = first.unwrap();
    eprintln!(
        "after round 1: {threads_1} threads, {fds_1} open files; after round {ROUNDS}: {} \
         threads, {} open files",
        settled_threads().await,
        open_fds()
    );
    peer.stop().await;
}

/// A message each way between the restarted node's user and the peer's, and a typing
/// notice from the restarted node's user.
async fn exchange(alice: &User, bob: &User, room: &str, round: usize) {
    let out = alice.send_text(room, &format!("round {round}")).await;
    bob.sync_until(None, |s| has_event(s, room, &out)).await;
    let back = bob.send_text(room, &format!("ack {round}")).await;
    alice.sync_until(None, |s| has_event(s, room, &back)).await;
    alice
        .put_ok(
            &format!(
                "/rooms/{}/typing/{}",
                neurite_tests::enc(room),
                neurite_tests::enc(&alice.user_id)
            ),
            json!({ "typing": true, "timeout": 30_000 }),
        )
        .await;
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// This process's open file descriptors.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The files under `dir` this process holds open.
fn open_files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .collect()
}

/// This process's thread count once idle blocking threads have ended: read until it has not
/// changed for ten keep-alive periods, for at most 10 s.
async fn settled_threads() -> usize {
    let count = || {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = count();
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < THREAD_KEEP_ALIVE * 10 {
        tokio::time::sleep(THREAD_KEEP_ALIVE / 2).await;
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// A start that fails once the database is open and the swarm listens (the client port is
/// taken) closes both before it reports the error.
#[test]
fn a_failed_start_releases_what_it_opened() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(failed_start());
}

async fn failed_start() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listener");
    let p2p_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().canonicalize().expect("data dir");
    let mut config = neurite_core::Config::new(dir.path());
    config.client_addr = taken.local_addr().expect("address");
    config.p2p_listen = vec![
        format!("/ip4/127.0.0.1/tcp/{p2p_port}")
            .parse()
            .expect("multiaddr"),
    ];
    config.mdns_enabled = false;
    let started = tokio::time::timeout(neurite_tests::WAIT, neurite_core::Node::start(config))
        .await
        .expect("start timed out");
    assert!(started.is_err(), "the client port is taken");
    let held = open_files_under(&data_dir);
    assert!(held.is_empty(), "files still open: {held:?}");
    assert!(!data_dir.join("neurite.db-wal").exists());
    TcpListener::bind((Ipv4Addr::LOCALHOST, p2p_port)).expect("the p2p port is free again");
}
