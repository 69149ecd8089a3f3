//! `neurite`: run a Neurite node from a terminal, or manage its accounts.

use std::{io::Read, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use neurite_core::{Config, Node, PasswordCost, RateLimits, RegistrationMode, p2p::Multiaddr};
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
    /// Logs go to stderr (RUST_LOG).
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
        /// Cheap password hashing, for tests and benchmarks only.
        #[arg(long, hide = true)]
        insecure_fast_passwords: bool,
        /// No rate limits on password checks and registration, for benchmarks only.
        #[arg(long, hide = true)]
        no_rate_limits: bool,
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
                if insecure_fast_passwords {
                    config.password_cost = PasswordCost::TESTING;
                }
                if no_rate_limits {
                    config.rate_limits = RateLimits::UNLIMITED;
                }
                run(config).await
            }
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
    signals.recv().await;
    tracing::info!("shutting down");
    node.shutdown().await.map_err(|e| e.to_string())
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
