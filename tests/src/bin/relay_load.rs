//! Memory figures for a relay: a `neurite relay` process of its own on loopback, `--clients`
//! libp2p peers in this process that each hold a reservation on it, then half of them each
//! opening a circuit to one of the other half. Prints one JSON line: the relay's resident
//! memory (VmRSS) idle, with the reservations, and with the circuits open, and the cost of
//! one reservation and one circuit.
//!
//! ```sh
//! cargo build --release -p neurite-demo -p neurite-tests --bin neurite --bin relay_load
//! target/release/relay_load --neurite target/release/neurite --clients 50
//! ```
//!
//! The relay's default rate limits allow 60 reservations and 60 circuits at once from one IP
//! address, so `--clients` stays at or below 60.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Parser;
use futures::StreamExt;
use libp2p::{
    Multiaddr, identify, multiaddr::Protocol, noise, ping, relay, swarm::NetworkBehaviour,
    swarm::SwarmEvent, tcp, yamux,
};
use neurite_tests::process::NeuriteProcess;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Loads a relay with reservations and circuits and prints its memory.
#[derive(Parser)]
#[command(name = "relay_load")]
struct Args {
    /// The `neurite` binary.
    #[arg(long, value_name = "PATH")]
    neurite: PathBuf,
    /// Peers holding a reservation (at most 60: the relay's per-IP rate limit).
    #[arg(long, default_value_t = 50)]
    clients: usize,
}

/// The relay process, killed when dropped.
struct RelayProcess {
    process: NeuriteProcess,
    addr: Multiaddr,
}

impl RelayProcess {
    fn start(neurite: &Path) -> Result<Self, String> {
        let (process, v) =
            NeuriteProcess::start(neurite, "relay", &["--listen", "/ip4/127.0.0.1/tcp/0"])?;
        let addr = v["p2p_addrs"][0]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or("no relay address")?;
        Ok(Self { process, addr })
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        self.process.status_kib("VmRSS")
    }
}

#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// What a client reports.
enum Report {
    Reserved,
    Connected,
}

/// Runs one client: it reserves a place on `relay`, then dials `dial` through it (if given),
/// reporting both; it keeps running until the process ends.
async fn client(
    relay_addr: Multiaddr,
    keypair: libp2p::identity::Keypair,
    dial: mpsc::Receiver<Multiaddr>,
    reports: mpsc::Sender<Report>,
) -> Result<(), String> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| e.to_string())?
        .with_behaviour(|key, relay| Client {
            relay,
            identify: identify::Behaviour::new(identify::Config::new(
                "/neurite/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
        })
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    swarm
        .listen_on(relay_addr.with(Protocol::P2pCircuit))
        .map_err(|e| e.to_string())?;
    let mut dial = dial;
    loop {
        tokio::select! {
            Some(addr) = dial.recv() => {
                swarm.dial(addr).map_err(|e| e.to_string())?;
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(ClientEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { renewal: false, .. },
                )) => {
                    let _ = reports.send(Report::Reserved).await;
                }
                SwarmEvent::ConnectionEstablished { endpoint, .. }
                    if endpoint.is_relayed() && endpoint.is_dialer() =>
                {
                    let _ = reports.send(Report::Connected).await;
                }
                _ => {}
            },
        }
    }
}

/// Waits for `n` reports that `want` accepts, at most 60 s.
async fn wait_for(
    reports: &mut mpsc::Receiver<Report>,
    n: usize,
    want: impl Fn(&Report) -> bool,
) -> Result<(), String> {
    let mut seen = 0;
    let wait = async {
        while seen < n {
            match reports.recv().await {
                Some(r) if want(&r) => seen += 1,
                Some(_) => {}
                None => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .map_err(|_| format!("only {seen} of {n} within 60 s"))
}

/// The relay's memory once it has settled (allocations of a burst come back in a moment).
async fn settled_rss(relay: &RelayProcess) -> u64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.rss_kib()
}

async fn run(args: Args) -> Result<Value, String> {
    let relay = RelayProcess::start(&args.neurite)?;
    let idle = settled_rss(&relay).await;
    let (reports_tx, mut reports) = mpsc::channel(args.clients * 2);
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let peer = keypair.public().to_peer_id();
        let (dial_tx, dial_rx) = mpsc::channel(1);
        let task = tokio::spawn(client(
            relay.addr.clone(),
            keypair,
            dial_rx,
            reports_tx.clone(),
        ));
        clients.push((peer, dial_tx, task));
    }
    wait_for(&mut reports, args.clients, |r| {
        matches!(r, Report::Reserved)
    })
    .await?;
    let reserved = settled_rss(&relay).await;
    let circuits = args.clients / 2;
    for i in 0..circuits {
        let target = clients[i + circuits].0;
        let addr = relay
            .addr
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(target));
        clients[i]
            .1
            .send(addr)
            .await
            .map_err(|_| "a client stopped")?;
    }
    wait_for(&mut reports, circuits, |r| matches!(r, Report::Connected)).await?;
    let with_circuits = settled_rss(&relay).await;
    for (_, _, task) in &clients {
        task.abort();
    }
    let per = |delta: u64, n: usize| (delta as f64 / n.max(1) as f64 * 10.0).round() / 10.0;
    Ok(json!({
        "clients": args.clients,
        "circuits": circuits,
        "relay_rss_kib": { "idle": idle, "reserved": reserved, "with_circuits": with_circuits },
        "kib_per_reservation": per(reserved.saturating_sub(idle), args.clients),
        "kib_per_circuit": per(with_circuits.saturating_sub(reserved), circuits),
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(figures) => {
            println!("{figures}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relay_load: {e}");
            ExitCode::FAILURE
        }
    }
}
