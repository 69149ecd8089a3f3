//! Figures for floods from hostile peers, against a `neurite` process of its own on loopback:
//! one JSON line per scenario on stdout.
//!
//! - `junk`: `--peers` evil servers each send `--rounds` unsigned bodies of `--mib` MiB made of
//!   tiny JSON values, all at once; the node's peak resident memory (VmHWM) before and after.
//! - `slow`: `--streams` federation streams (spread over `--peers` evil servers) send a request
//!   head one byte per second, and are opened again when the node closes them; meanwhile
//!   another server sends `--requests` signed requests one after the other, timed.
//!
//! ```sh
//! cargo build --release -p neurite-demo -p neurite-tests --bin neurite --bin flood
//! target/release/flood --neurite target/release/neurite junk
//! target/release/flood --neurite target/release/neurite slow
//! ```

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{Multiaddr, multiaddr::Protocol};
use neurite_tests::{evil::EvilPeer, process::NeuriteProcess};
use reqwest::Method;
use serde_json::{Value, json};

/// Floods a `neurite` node from evil peers and prints figures.
#[derive(Parser)]
#[command(name = "flood")]
struct Args {
    /// The `neurite` binary.
    #[arg(long, value_name = "PATH")]
    neurite: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Unsigned bodies of tiny JSON values from many peers at once.
    Junk {
        #[arg(long, default_value_t = 20)]
        peers: usize,
        #[arg(long, default_value_t = 4)]
        mib: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Request heads sent one byte per second, and a legitimate peer's latency meanwhile.
    Slow {
        #[arg(long, default_value_t = 200)]
        streams: usize,
        #[arg(long, default_value_t = 10)]
        peers: usize,
        #[arg(long, default_value_t = 100)]
        requests: usize,
    },
}

/// A `neurite run` process on loopback, killed when dropped.
struct Node {
    process: NeuriteProcess,
    server_name: String,
    addrs: Vec<Multiaddr>,
}

impl Node {
    fn start(bin: &Path) -> Result<Self, String> {
        let (process, v) = NeuriteProcess::start(
            bin,
            "run",
            &[
                "--client-addr",
                "127.0.0.1:0",
                "--no-mdns",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
            ],
        )?;
        let server_name = v["server_name"]
            .as_str()
            .ok_or("no server name")?
            .to_owned();
        let addrs = v["p2p_addrs"]
            .as_array()
            .ok_or("no p2p addresses")?
            .iter()
            .filter_map(|a| a.as_str()?.parse::<Multiaddr>().ok())
            .map(|a| {
                a.iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect()
            })
            .collect();
        Ok(Self {
            process,
            server_name,
            addrs,
        })
    }

    /// `VmRSS` and `VmHWM` of the process, in KiB.
    fn memory(&self) -> (u64, u64) {
        (
            self.process.status_kib("VmRSS"),
            self.process.status_kib("VmHWM"),
        )
    }

    async fn evil(&self) -> Result<EvilPeer, String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
        EvilPeer::connect_to(&self.server_name, self.addrs.clone(), seed).await
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let node = match Node::start(&args.neurite) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("flood: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.scenario {
        Scenario::Junk { peers, mib, rounds } => junk(&node, peers, mib, rounds).await,
        Scenario::Slow {
            streams,
            peers,
            requests,
        } => slow(&node, streams, peers, requests).await,
    };
    match result {
        Ok(figures) => {
            println!("{figures}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flood: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends `body` on a raw stream with a forged signature; returns the answer's status line.
async fn send_raw(evil: &EvilPeer, body: &[u8]) -> String {
    let path = "/_matrix/federation/v1/send/junk";
    let auth = evil.authorization(&Method::PUT, path, Some(&json!({})));
    let Ok(mut stream) = evil.try_open_stream().await else {
        return "no stream".into();
    };
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        evil.target(),
        body.len()
    );
    let exchange = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        std::io::Result::Ok(answer)
    };
    match tokio::time::timeout(Duration::from_secs(120), exchange).await {
        Ok(Ok(answer)) => String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("empty answer")
            .to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "timed out".into(),
    }
}

async fn junk(node: &Node, peers: usize, mib: usize, rounds: usize) -> Result<Value, String> {
    let mut body = Vec::with_capacity(mib * 1024 * 1024);
    body.extend_from_slice(b"{\"pdus\":[");
    while body.len() < mib * 1024 * 1024 - 16 {
        body.extend_from_slice(b"0,");
    }
    body.extend_from_slice(b"0]}");
    let body = Arc::new(body);
    let mut evils = Vec::new();
    for _ in 0..peers {
        evils.push(Arc::new(node.evil().await?));
    }
    let (rss_before, hwm_before) = node.memory();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for evil in &evils {
        let (evil, body) = (evil.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..rounds {
                answers.push(send_raw(&evil, &body).await);
            }
            answers
        }));
    }
    let mut answers: Vec<String> = Vec::new();
    for t in tasks {
        answers.extend(t.await.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed();
    let (rss_after, hwm_after) = node.memory();
    answers.sort();
    answers.dedup();
    Ok(json!({
        "scenario": "junk",
        "peers": peers,
        "body_mib": mib,
        "rounds": rounds,
        "seconds": elapsed.as_secs_f64(),
        "rss_kib_before": rss_before,
        "peak_rss_kib_before": hwm_before,
        "rss_kib_after": rss_after,
        "peak_rss_kib_after": hwm_after,
        "answers": answers,
    }))
}

async fn slow(node: &Node, streams: usize, peers: usize, requests: usize) -> Result<Value, String> {
    let mut evils = Vec::new();
    for _ in 0..peers.max(1) {
        evils.push(Arc::new(node.evil().await?));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..streams {
        let (evil, stop, reopened) = (
            evils[i % evils.len()].clone(),
            stop.clone(),
            reopened.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let head = b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\n";
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = evil.try_open_stream().await else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                for byte in head.iter().cycle() {
                    if stop.load(Ordering::Relaxed)
                        || stream.write_all(&[*byte]).await.is_err()
                        || stream.flush().await.is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                reopened.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let the slow streams settle in before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let good = node.evil().await?;
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for n in 0..requests {
        let started = Instant::now();
        let path = format!("/_matrix/federation/v1/send/bench{n}");
        let req = good.try_request(Method::PUT, &path, Some(json!({ "pdus": [], "edus": [] })));
        match tokio::time::timeout(Duration::from_secs(30), req).await {
            Ok(Ok((status, _))) if status.is_success() => {
                times.push(started.elapsed().as_secs_f64() * 1000.0)
            }
            Ok(Ok((status, body))) => failures.push(format!("{status} {body}")),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("timed out".into()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (rss, hwm) = node.memory();
    for t in tasks {
        t.abort();
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if times.is_empty() {
            Value::Null
        } else {
            json!(times[((times.len() - 1) as f64 * p).round() as usize])
        }
    };
    failures.sort();
    failures.dedup();
    Ok(json!({
        "scenario": "slow",
        "streams": streams,
        "peers": peers,
        "requests": requests,
        "ok": times.len(),
        "latency_ms_median": pct(0.5),
        "latency_ms_p95": pct(0.95),
        "latency_ms_max": pct(1.0),
        "failures": failures,
        "slow_streams_reopened": reopened.load(Ordering::Relaxed),
        "rss_kib": rss,
        "peak_rss_kib": hwm,
    }))
}
