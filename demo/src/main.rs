//! `neurite`: run a Neurite node from a terminal, or manage its accounts.

use std::{io::Read, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use neurite_core::{
    Config, Node, PasswordCost, RateLimits, RegistrationMode,
    p2p::{Multiaddr, P2p, PeerEvent, PeerId, RelayLimits},
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "neurite",
    version,
    about = "A Matrix homeserver for one device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until SIGINT or SIGTERM.
    ///
    /// Once listening, prints one JSON line on stdout:
    /// {"event":"listening","server_name":…,"client_url":…,"peer_id":…,"p2p_addrs":[…]}.
    /// Then one line per change: {"event":"addresses","p2p_addrs":[…]} when the addresses it
    /// tells peers about change (e.g. a relay reservation is accepted or lost),
    /// {"event":"peer_connected","peer_id":…,"server_name":…,"path":"direct"|"relayed"} when
    /// a peer connects or its path changes, {"event":"peer_disconnected","peer_id":…,
    /// "server_name":…} when it goes. Logs go to stderr (RUST_LOG).
    Run {
        /// Directory for the database, the node key and media (created if missing).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Address of the client-server API. Port 0 picks a free port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8008")]
        client_addr: SocketAddr,
        /// Who may create accounts through the API: disabled, open, or token:SECRET.
        #[arg(long, value_name = "MODE", default_value = "disabled")]
        registration: RegistrationMode,
        /// Peer-to-peer listen address (repeatable). Default: TCP on every interface, any port.
        #[arg(long = "p2p-listen", value_name = "MULTIADDR")]
        p2p_listen: Vec<Multiaddr>,
        /// A peer to connect to, as a multiaddr ending in /p2p/<peer id> (repeatable).
        #[arg(long = "peer", value_name = "MULTIADDR")]
        peers: Vec<Multiaddr>,
        /// Do not discover peers on the local network with mDNS (on by default).
        #[arg(long)]
        no_mdns: bool,
        /// A relay to keep a reservation on, as a multiaddr ending in /p2p/<relay id>
        /// (repeatable): peers on other networks reach this node through it.
        #[arg(long = "relay", value_name = "MULTIADDR")]
        relays: Vec<Multiaddr>,
        /// Also serve as a relay for peers (off by default), with the limits below.
        #[arg(long)]
        serve_relay: bool,
        #[command(flatten)]
        relay_limits: RelayLimitArgs,
        /// Cheap password hashing, for tests and benchmarks only.
        #[arg(long, hide = true)]
        insecure_fast_passwords: bool,
        /// No rate limits on password checks and registration, for benchmarks only.
        #[arg(long, hide = true)]
        no_rate_limits: bool,
    },
    /// Run a relay-only node (circuit relay v2, identify, ping, AutoNAT server) until SIGINT or
    /// SIGTERM: no client API, no rooms. For a small server or an always-on device that
    /// phones on different networks can all reach.
    ///
    /// Once listening, prints one JSON line on stdout:
    /// {"event":"listening","peer_id":…,"p2p_addrs":[…/p2p/<id>]}.
    Relay {
        /// Directory for the relay's key (created if missing).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
        #[arg(long = "listen", value_name = "MULTIADDR", required = true)]
        listen: Vec<Multiaddr>,
        /// The address peers reach the relay at, when it is not one the host listens on
        /// (repeatable; e.g. a public address in front of a cloud machine).
        #[arg(long = "announce", value_name = "MULTIADDR")]
        announce: Vec<Multiaddr>,
        #[command(flatten)]
        limits: RelayLimitArgs,
    },
    /// List the peers in a node's address book, one JSON line each.
    Peers {
        /// The node's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Create an account in a node's data directory (works while registration is disabled).
    Register {
        /// The node's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The new user's name (the local part of the user id).
        username: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// What a relay allows the peers it serves (`neurite relay`, `neurite run --serve-relay`).
#[derive(Args)]
struct RelayLimitArgs {
    /// Relay: reservations held at once.
    #[arg(long, value_name = "N", default_value_t = RelayLimits::default().max_reservations)]
    max_reservations: usize,
    /// Relay: reservations one peer may hold.
    #[arg(long, value_name = "N", default_value_t = RelayLimits::default().max_reservations_per_peer)]
    max_reservations_per_peer: usize,
    /// Relay: seconds a reservation lasts before it must be renewed.
    #[arg(long, value_name = "SECS", default_value_t = RelayLimits::default().reservation_duration.as_secs())]
    reservation_duration: u64,
    /// Relay: circuits open at once.
    #[arg(long, value_name = "N", default_value_t = RelayLimits::default().max_circuits)]
    max_circuits: usize,
    /// Relay: circuits open at once to or from one peer.
    #[arg(long, value_name = "N", default_value_t = RelayLimits::default().max_circuits_per_peer)]
    max_circuits_per_peer: usize,
    /// Relay: seconds one circuit may stay open.
    #[arg(long, value_name = "SECS", default_value_t = RelayLimits::default().max_circuit_duration.as_secs())]
    max_circuit_duration: u64,
    /// Relay: bytes one circuit may carry each way.
    #[arg(long, value_name = "BYTES", default_value_t = RelayLimits::default().max_circuit_bytes)]
    max_circuit_bytes: u64,
    /// Relay-only node: connections open at once.
    #[arg(long, value_name = "N", default_value_t = RelayLimits::default().max_connections)]
    max_relay_connections: u32,
}

impl RelayLimitArgs {
    fn limits(&self) -> RelayLimits {
        RelayLimits {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: Duration::from_secs(self.reservation_duration),
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: Duration::from_secs(self.max_circuit_duration),
            max_circuit_bytes: self.max_circuit_bytes,
            max_connections: self.max_relay_connections,
        }
    }
}

/// glibc raises its mmap threshold each time a large block is freed, so after the first
/// password hash (argon2 takes 19 MiB) later hashes are carved from the per-thread arenas and
/// stay resident after they finish: one 19 MiB block per blocking thread that ever hashed.
/// A fixed threshold keeps every block of 256 KiB or more in its own mapping, returned to the
/// system when freed; two arenas instead of eight per core keep the free space left behind by
/// bursts of concurrent requests from being spread over many arenas. Other C libraries
/// (bionic, Apple's) already map large blocks apart.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; it runs before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ruma_state_res=warn")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("neurite: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run {
                data_dir,
                client_addr,
                registration,
                p2p_listen,
                peers,
                no_mdns,
                relays,
                serve_relay,
                relay_limits,
                insecure_fast_passwords,
                no_rate_limits,
            } => {
                let mut config = Config::new(data_dir);
                config.client_addr = client_addr;
                config.registration = registration;
                if !p2p_listen.is_empty() {
                    config.p2p_listen = p2p_listen;
                }
                config.static_peers = peers;
                config.mdns_enabled = !no_mdns;
                config.relays = relays;
                config.serve_relay = serve_relay;
                config.relay_limits = relay_limits.limits();
                if insecure_fast_passwords {
                    config.password_cost = PasswordCost::TESTING;
                }
                if no_rate_limits {
                    config.rate_limits = RateLimits::UNLIMITED;
                }
                run(config).await
            }
            Command::Relay {
                data_dir,
                listen,
                announce,
                limits,
            } => relay(data_dir, listen, announce, limits.limits()).await,
            Command::Peers { data_dir } => peers(data_dir).await,
            Command::Register {
                data_dir,
                username,
                password_stdin,
            } => register(data_dir, username, password_stdin).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("neurite: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    // Handlers first: a SIGTERM or SIGINT that comes while the node starts, or just after the
    // `listening` line, still shuts it down cleanly.
    let mut signals = ShutdownSignals::install().map_err(|e| format!("signal handlers: {e}"))?;
    let node = Node::start(config).await.map_err(|e| e.to_string())?;
    // Fields in a fixed order, as documented.
    let line = format!(
        r#"{{"event":"listening","server_name":{},"client_url":{},"peer_id":{},"p2p_addrs":{}}}"#,
        json!(node.server_name()),
        json!(node.client_url()),
        json!(node.peer_id()),
        json!(node.p2p_addrs()),
    );
    println!("{line}");
    let report = node.p2p().cloned().map(|p2p| {
        let addrs = node.p2p_addrs();
        tokio::spawn(report_changes(p2p, addrs))
    });
    signals.recv().await;
    tracing::info!("shutting down");
    if let Some(report) = report {
        report.abort();
    }
    node.shutdown().await.map_err(|e| e.to_string())
}

/// Prints a JSON line on stdout for each change in the node's addresses and peers (see the
/// `run` command's help), starting from the addresses of the `listening` line and the peers
/// connected by now.
async fn report_changes(p2p: P2p, mut printed: Vec<String>) {
    let mut events = p2p.subscribe();
    let mut addrs = p2p.watch_addrs();
    let server_name = |peer: &PeerId| p2p.server_name_of(peer);
    let mut paths = std::collections::HashMap::new();
    for peer in p2p.peers().await {
        if let Some(path) = peer.path {
            paths.insert(peer.peer_id, path);
        }
    }
    // Fields in a fixed order, as documented.
    let connected = |peer: &PeerId, path: neurite_core::p2p::Path| {
        format!(
            r#"{{"event":"peer_connected","peer_id":{},"server_name":{},"path":{}}}"#,
            json!(peer.to_string()),
            json!(server_name(peer)),
            json!(path.as_str()),
        )
    };
    for (peer, path) in &paths {
        println!("{}", connected(peer, *path));
    }
    loop {
        tokio::select! {
            changed = addrs.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = p2p.listen_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>();
                if now != printed {
                    println!(r#"{{"event":"addresses","p2p_addrs":{}}}"#, json!(now));
                    printed = now;
                }
            }
            event = events.recv() => match event {
                Ok(PeerEvent::Connected(peer, path) | PeerEvent::PathChanged(peer, path)) => {
                    if paths.insert(peer, path) != Some(path) {
                        println!("{}", connected(&peer, path));
                    }
                }
                Ok(PeerEvent::Disconnected(peer)) => {
                    if paths.remove(&peer).is_some() {
                        println!(
                            r#"{{"event":"peer_disconnected","peer_id":{},"server_name":{}}}"#,
                            json!(peer.to_string()),
                            json!(server_name(&peer)),
                        );
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

async fn relay(
    data_dir: PathBuf,
    listen: Vec<Multiaddr>,
    announce: Vec<Multiaddr>,
    limits: RelayLimits,
) -> Result<(), String> {
    let mut signals = ShutdownSignals::install().map_err(|e| format!("signal handlers: {e}"))?;
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let identity =
        neurite_core::identity::Identity::load_or_create(&data_dir).map_err(|e| e.to_string())?;
    let tasks = neurite_core::tasks::Tasks::default();
    let relay =
        neurite_core::p2p::relay::RelayNode::start(&identity, &listen, &announce, &limits, &tasks)
            .await
            .map_err(|e| e.to_string())?;
    let line = format!(
        r#"{{"event":"listening","peer_id":{},"p2p_addrs":{}}}"#,
        json!(relay.peer_id().to_string()),
        json!(
            relay
                .addrs()
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        ),
    );
    println!("{line}");
    signals.recv().await;
    tracing::info!("shutting down");
    tasks.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), caught from the moment they are installed.
#[cfg(unix)]
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Completes at the first signal, including one that came before this call.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct ShutdownSignals(tokio::signal::windows::CtrlC);

#[cfg(not(unix))]
impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        tokio::signal::windows::ctrl_c().map(Self)
    }

    async fn recv(&mut self) {
        self.0.recv().await;
    }
}

async fn peers(data_dir: PathBuf) -> Result<(), String> {
    let peers = neurite_core::known_peers(Config::new(data_dir))
        .await
        .map_err(|e| e.to_string())?;
    for p in peers {
        println!(
            "{}",
            json!({
                "peer_id": p.peer_id,
                "server_name": p.server_name,
                "addresses": p.addresses,
                "discovered": p.discovered,
                "last_seen_ts": p.last_seen_ts,
            })
        );
    }
    Ok(())
}

async fn register(data_dir: PathBuf, username: String, password_stdin: bool) -> Result<(), String> {
    let password = if password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| e.to_string())?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        eprint!("Password for {username}: ");
        let mut s = String::new();
        std::io::stdin()
            .read_line(&mut s)
            .map_err(|e| e.to_string())?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err("the password must not be empty".into());
    }
    let user_id = neurite_core::register_offline(Config::new(data_dir), &username, &password)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", json!({ "event": "registered", "user_id": user_id }));
    Ok(())
}
