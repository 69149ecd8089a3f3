//! A seeded convergence ("churn") scenario over real `neurite` processes.
//!
//! Several nodes share one room and send at once while, round after round, one node is killed
//! (and restarted on the same data directory and address) or frozen (and resumed), topics and
//! power levels change and a member leaves and joins again. Once the last fault has healed,
//! every node must come to hold every event that some node acknowledged with a `200`, and all
//! nodes must report the same room state. Everything the scenario chooses (peer graph, victims,
//! fault kinds and lengths, who sends how much, who leaves) follows from the seed, so a failing
//! seed can be run again; the timing of the processes does not.
//!
//! What a node owes: every event acknowledged anywhere, except those sent while its user was
//! out of the room (between leaving and rejoining) and those it had not yet received when its
//! user left (nothing brings them back after a rejoin). Requests answered `403` are reported,
//! not counted. State is compared as the set of `(type, state_key, event_id)` that
//! `GET /rooms/{id}/state` returns on each node.
//!
//! Used by `tests/tests/churn.rs` (a quick seed set) and the `converge` binary (soak runs).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Write as _},
    net::TcpListener,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::enc;

/// Nodes per seed unless told otherwise.
pub const DEFAULT_NODES: usize = 6;
/// Fault rounds per seed unless told otherwise.
pub const DEFAULT_ROUNDS: usize = 3;
/// How long the nodes get to converge after the last fault healed, unless told otherwise.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(60);

/// Longest wait for a node to print its listening line.
const START_WAIT: Duration = Duration::from_secs(30);
/// Longest any one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a step of the room set-up (an invite arriving, everyone joined).
const SETUP_WAIT: Duration = Duration::from_secs(45);
/// Longest wait for a leave or a rejoin to be seen by other nodes (only noted if it lapses).
const REJOIN_WAIT: Duration = Duration::from_secs(10);
/// Pause between two looks at the nodes while waiting for a condition.
const POLL: Duration = Duration::from_millis(250);
/// Pause between two looks while settling, from 10 s after the last heal on.
const SLOW_POLL: Duration = Duration::from_secs(1);
/// Messages every user sends in the calm burst before the faults.
const CALM_MESSAGES: usize = 5;

/// Where the `neurite` binary is: `NEURITE_BIN` if set, else next to the running executable
/// (`<target>/debug/neurite` for both `<target>/debug/deps/churn-…` and `<target>/debug/converge`).
pub fn neurite_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("NEURITE_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("NEURITE_BIN={} is not a file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("neurite{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the neurite binary is not at {}: run `cargo build -p neurite-demo` first \
             (with the same target directory), or point NEURITE_BIN at it",
            path.display()
        ))
    }
}

/// Reads a seed set: a count `N` (seeds 1 to N), a list `3,7,12`, or a range `5..=9`.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, String> {
    let text = text.trim();
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("not a seed set: {text:?} (use N, a,b,c or a..=b)"))
    };
    if let Some((a, b)) = text.split_once("..=") {
        return Ok((num(a)?..=num(b)?).collect());
    }
    if text.contains(',') {
        return text
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(num)
            .collect();
    }
    Ok((1..=num(text)?).collect())
}

/// The seeds from `NEURITE_CHURN_SEEDS` (see [`parse_seeds`]), else `default`.
pub fn seeds_from_env(default: RangeInclusive<u64>) -> Vec<u64> {
    match std::env::var("NEURITE_CHURN_SEEDS") {
        Ok(s) => parse_seeds(&s).unwrap_or_else(|e| panic!("NEURITE_CHURN_SEEDS: {e}")),
        Err(_) => default.collect(),
    }
}

/// The node count from `NEURITE_CHURN_NODES`, else `default`.
pub fn nodes_from_env(default: usize) -> usize {
    match std::env::var("NEURITE_CHURN_NODES") {
        Ok(s) => s
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 2)
            .unwrap_or_else(|| panic!("NEURITE_CHURN_NODES must be a number of at least 2: {s:?}")),
        Err(_) => default,
    }
}

// ---- The seeded plan ----

/// splitmix64: small, fast and good enough to make choices from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x6e65_7572_6974_6521)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// One of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// How a round's victim is hurt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a restart on the same data directory and address after `down`.
    Kill { down: Duration },
    /// SIGSTOP, then SIGCONT after `frozen`.
    Stop { frozen: Duration },
}

impl Fault {
    fn length(self) -> Duration {
        match self {
            Fault::Kill { down } => down,
            Fault::Stop { frozen } => frozen,
        }
    }
}

/// One fault round.
#[derive(Debug, Clone)]
pub struct Round {
    /// The node hurt for the round; its user does nothing meanwhile.
    pub victim: usize,
    /// What happens to it.
    pub fault: Fault,
    /// Messages each node's user sends while the victim is down (0 for the victim).
    pub messages: Vec<usize>,
    /// The user who sets the topic.
    pub topic_by: usize,
    /// The user who changes the power levels.
    pub power_by: usize,
    /// `(leaver, via)`: a member who leaves, then joins again through `via`'s server.
    pub leave: Option<(usize, usize)>,
    /// Messages each other live user sends while the leaver is away.
    pub messages_during_leave: Vec<usize>,
}

/// Everything a seed decides.
#[derive(Debug, Clone)]
pub struct Plan {
    /// For each node, the earlier nodes it is given as `--peer`.
    pub peers: Vec<Vec<usize>>,
    /// The fault rounds.
    pub rounds: Vec<Round>,
}

impl Plan {
    /// The plan for `seed` with `nodes` nodes (at least 2) and `rounds` fault rounds.
    pub fn new(seed: u64, nodes: usize, rounds: usize) -> Self {
        assert!(nodes >= 2, "a churn run needs at least 2 nodes");
        let mut rng = Rng::new(seed);
        let mut peers = vec![Vec::new()];
        for i in 1..nodes {
            let mut mine = vec![rng.below(i)];
            if i >= 2 && rng.below(2) == 1 {
                let other = rng.below(i);
                if other != mine[0] {
                    mine.push(other);
                }
            }
            mine.sort_unstable();
            peers.push(mine);
        }
        let all: Vec<usize> = (0..nodes).collect();
        let rounds = (0..rounds)
            .map(|_| {
                let victim = rng.below(nodes);
                let fault = if rng.below(2) == 0 {
                    Fault::Kill {
                        down: Duration::from_millis(rng.between(1000, 3000)),
                    }
                } else {
                    Fault::Stop {
                        frozen: Duration::from_millis(rng.between(2000, 4000)),
                    }
                };
                let live: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
                let messages = all
                    .iter()
                    .map(|&i| {
                        if i == victim {
                            0
                        } else {
                            rng.between(2, 3) as usize
                        }
                    })
                    .collect();
                let topic_by = rng.pick(&live);
                let power_by = rng.pick(&live);
                let leavers: Vec<usize> = live.iter().copied().filter(|&i| i != 0).collect();
                let leave = if leavers.is_empty() {
                    None
                } else {
                    let leaver = rng.pick(&leavers);
                    let vias: Vec<usize> = live.iter().copied().filter(|&i| i != leaver).collect();
                    (!vias.is_empty()).then(|| (leaver, rng.pick(&vias)))
                };
                let messages_during_leave = all
                    .iter()
                    .map(|&i| match leave {
                        Some((leaver, _)) if i != victim && i != leaver => {
                            rng.between(1, 2) as usize
                        }
                        _ => 0,
                    })
                    .collect();
                Round {
                    victim,
                    fault,
                    messages,
                    topic_by,
                    power_by,
                    leave,
                    messages_during_leave,
                }
            })
            .collect();
        Self { peers, rounds }
    }

    /// The plan in a few human-readable lines.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!(
            "peers: {}",
            self.peers
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, p)| format!("{i}->{p:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        )];
        for (r, round) in self.rounds.iter().enumerate() {
            let fault = match round.fault {
                Fault::Kill { down } => format!("kill {} ms", down.as_millis()),
                Fault::Stop { frozen } => format!("stop {} ms", frozen.as_millis()),
            };
            let leave = match round.leave {
                Some((l, v)) => format!("node {l} leaves, rejoins via node {v}"),
                None => "nobody leaves".into(),
            };
            out.push(format!(
                "round {r}: node {} {fault}; topic by {}, power levels by {}; {leave}",
                round.victim, round.topic_by, round.power_by
            ));
        }
        out
    }
}

// ---- Options and results ----

/// What to run for one seed.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed.
    pub seed: u64,
    /// Nodes (at least 2).
    pub nodes: usize,
    /// Fault rounds.
    pub rounds: usize,
    /// The `neurite` binary.
    pub neurite: PathBuf,
    /// How long the nodes may take to converge after the last fault healed.
    pub settle: Duration,
    /// Keep the data directories (and logs) of a failing seed instead of removing them.
    pub keep_failed: bool,
    /// Keep them whatever the verdict (to study a seed that passed slowly).
    pub keep_all: bool,
}

impl Options {
    /// Defaults for everything but the seed, the node count and the binary.
    pub fn new(seed: u64, nodes: usize, neurite: PathBuf) -> Self {
        Self {
            seed,
            nodes,
            rounds: DEFAULT_ROUNDS,
            neurite,
            settle: DEFAULT_SETTLE,
            keep_failed: false,
            keep_all: false,
        }
    }
}

/// What one node holds at the end.
#[derive(Debug, Clone, Default)]
pub struct NodeFigures {
    /// Acknowledged events this node must hold.
    pub expected: usize,
    /// Of those, how many it holds.
    pub present: usize,
    /// Labels of the ones it lacks.
    pub missing: Vec<String>,
    /// Of the acknowledged events, how many were sent while this node's user was away from
    /// the room (they are owed all the same: a rejoin fetches them).
    pub sent_while_away: usize,
    /// Of those, how many it holds.
    pub away_present: usize,
    /// Entries of its room state, if it answered.
    pub state_entries: Option<usize>,
    /// Whether its room state differs from the most common one.
    pub state_differs: bool,
    /// "rejected" lines in its log.
    pub rejected_in_log: usize,
    /// The last error talking to it, if any.
    pub error: Option<String>,
}

/// The outcome of one seed.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// A failure of the scenario itself (start-up, set-up, restart), before the verdict.
    pub error: Option<String>,
    /// Whether all nodes held all acknowledged events and agreed on the state in time.
    pub converged: bool,
    /// Time from the last heal to convergence.
    pub convergence: Option<Duration>,
    /// Events acknowledged with a `200`.
    pub acknowledged: usize,
    /// Requests answered `403` (printed, not counted as acknowledged).
    pub forbidden: Vec<String>,
    /// Other failed requests and set-up hiccups worth knowing about.
    pub notes: Vec<String>,
    /// Per node, in node order.
    pub per_node: Vec<NodeFigures>,
    /// State entries that differ between nodes, one line each.
    pub state_diff: Vec<String>,
    /// The plan, for the record.
    pub plan: Vec<String>,
    /// Excerpts of the node logs (only when the seed failed).
    pub logs: String,
    /// Where the data directories were kept, if they were.
    pub kept: Option<PathBuf>,
    /// Wall time of the whole seed.
    pub elapsed: Duration,
}

impl SeedReport {
    /// Whether the seed passed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.converged
    }

    /// The verdict in one word.
    pub fn verdict(&self) -> &'static str {
        if self.error.is_some() {
            "error"
        } else if self.converged {
            "converged"
        } else {
            "diverged"
        }
    }

    /// One JSON object with the figures.
    pub fn json(&self) -> Value {
        json!({
            "seed": self.seed,
            "nodes": self.nodes,
            "result": self.verdict(),
            "error": self.error,
            "convergence_ms": self.convergence.map(|d| d.as_millis() as u64),
            "acknowledged": self.acknowledged,
            "forbidden": self.forbidden.len(),
            "per_node": self.per_node.iter().enumerate().map(|(i, n)| json!({
                "node": i,
                "expected": n.expected,
                "present": n.present,
                "missing": n.missing.len(),
                "sent_while_away": n.sent_while_away,
                "away_present": n.away_present,
                "state_entries": n.state_entries,
                "state_differs": n.state_differs,
                "rejected_in_log": n.rejected_in_log,
            })).collect::<Vec<_>>(),
            "state_diff": self.state_diff.len(),
            "notes": self.notes,
            "elapsed_ms": self.elapsed.as_millis() as u64,
        })
    }

    /// A readable account: plan, figures per node, what is missing and what differs, notes.
    pub fn details(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {} ({} nodes): {}",
            self.seed,
            self.nodes,
            self.verdict()
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error: {e}");
        }
        for line in &self.plan {
            let _ = writeln!(s, "  plan {line}");
        }
        let _ = writeln!(s, "  acknowledged events: {}", self.acknowledged);
        for (i, n) in self.per_node.iter().enumerate() {
            let _ = writeln!(
                s,
                "  node {i}: {}/{} acknowledged events present, {} missing; sent while away {}/{}; \
                 state {}{}; {} \"rejected\" log lines{}",
                n.present,
                n.expected,
                n.missing.len(),
                n.away_present,
                n.sent_while_away,
                n.state_entries
                    .map_or_else(|| "unknown".to_owned(), |e| format!("{e} entries")),
                if n.state_differs { " (DIFFERS)" } else { "" },
                n.rejected_in_log,
                n.error
                    .as_ref()
                    .map(|e| format!("; error: {e}"))
                    .unwrap_or_default(),
            );
            if !n.missing.is_empty() {
                let shown: Vec<&str> = n.missing.iter().take(12).map(String::as_str).collect();
                let more = n.missing.len().saturating_sub(shown.len());
                let _ = writeln!(
                    s,
                    "    missing: {}{}",
                    shown.join(", "),
                    if more > 0 {
                        format!(" … and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
        }
        if !self.state_diff.is_empty() {
            let _ = writeln!(s, "  state entries that differ:");
            for line in &self.state_diff {
                let _ = writeln!(s, "    {line}");
            }
        }
        if !self.forbidden.is_empty() {
            let _ = writeln!(s, "  requests refused with 403:");
            for line in &self.forbidden {
                let _ = writeln!(s, "    {line}");
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "  notes:");
            for line in &self.notes {
                let _ = writeln!(s, "    {line}");
            }
        }
        if let Some(dir) = &self.kept {
            let _ = writeln!(s, "  data directories kept in {}", dir.display());
        }
        s
    }
}

// ---- Node processes ----

/// One `neurite run` process and what it printed.
struct Proc {
    dir: PathBuf,
    log: PathBuf,
    port: u16,
    peers: Vec<String>,
    child: Option<Child>,
    url: String,
    server_name: String,
    p2p_addr: String,
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The nodes of one seed; kills every process when dropped, panic or not.
struct Cluster {
    bin: PathBuf,
    root: Option<tempfile::TempDir>,
    procs: Vec<Proc>,
    http: reqwest::Client,
    users: Vec<(String, String)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("free port: {e}"))?
        .port();
    Ok(port)
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map_err(|e| format!("kill {sig} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {sig} {pid}: {status}"))
    }
}

impl Cluster {
    fn new(bin: PathBuf) -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix("neurite-churn-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            bin,
            root: Some(root),
            procs: Vec::new(),
            http,
            users: Vec::new(),
        })
    }

    fn root(&self) -> &Path {
        self.root.as_ref().expect("root").path()
    }

    /// Starts node `index` (the next one) with `peers` as static peers.
    async fn add(&mut self, peers: Vec<String>) -> Result<(), String> {
        let index = self.procs.len();
        let dir = self.root().join(format!("node{index}"));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut p = Proc {
            log: dir.join("neurite.log"),
            dir,
            port: 0,
            peers,
            child: None,
            url: String::new(),
            server_name: String::new(),
            p2p_addr: String::new(),
        };
        launch(&self.bin, &mut p, true)
            .await
            .map_err(|e| format!("node {index}: {e}"))?;
        self.procs.push(p);
        Ok(())
    }

    fn api(&self, i: usize) -> Api {
        Api {
            http: self.http.clone(),
            base: self.procs[i].url.clone(),
            token: self.users.get(i).map(|u| u.1.clone()),
        }
    }

    fn user(&self, i: usize) -> &str {
        &self.users[i].0
    }
}

/// Starts `p`'s process and waits for its listening line. With `fresh_port`, picks a new
/// peer-to-peer port for each attempt; otherwise keeps `p.port` (a restart keeps its address).
async fn launch(bin: &Path, p: &mut Proc, fresh_port: bool) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
        }
        if fresh_port || p.port == 0 {
            p.port = free_port()?;
        }
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .map_err(|e| format!("{}: {e}", p.log.display()))?;
        let _ = writeln!(
            log,
            "==== churn: starting on p2p port {} (attempt {attempt})",
            p.port
        );
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&p.dir)
            .args([
                "--client-addr",
                "127.0.0.1:0",
                "--no-mdns",
                "--registration",
                "open",
                "--insecure-fast-passwords",
                "--p2p-listen",
            ])
            .arg(format!("/ip4/127.0.0.1/tcp/{}", p.port));
        for peer in &p.peers {
            cmd.arg("--peer").arg(peer);
        }
        // The binary's own default, minus the state resolution chatter it logs per event.
        let filter =
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,ruma_state_res=warn".to_owned());
        cmd.env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match tokio::time::timeout(START_WAIT, rx).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                last = format!(
                    "exited ({status}) before listening; see {}",
                    p.log.display()
                );
                continue;
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                last = format!("no listening line within {START_WAIT:?}");
                continue;
            }
        };
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("listening line is not JSON: {line}"));
            }
        };
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        p.url = field("client_url");
        p.server_name = field("server_name");
        p.p2p_addr = v["p2p_addrs"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .find(|s| s.starts_with("/ip4/127.0.0.1/"))
            })
            .unwrap_or_default()
            .to_owned();
        if p.url.is_empty() || p.server_name.is_empty() || p.p2p_addr.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("unexpected listening line: {line}"));
        }
        p.child = Some(child);
        return Ok(());
    }
    Err(last)
}

// ---- HTTP ----

/// One user's client of one node (the node's address as it was when this was made).
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A request to `/_matrix/client/v3{path}`: `(status, body)`, or why there is no answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut req = self.http.request(
            method.clone(),
            format!("{}/_matrix/client/v3{path}", self.base),
        );
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// A request that must answer 200; its body.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        match self.call(method.clone(), path, body).await? {
            (200, v) => Ok(v),
            (s, v) => Err(format!("{method} {path}: {s} {v}")),
        }
    }
}

// ---- The scenario ----

/// A request that changes the room, as it went.
struct Sent {
    node: usize,
    label: String,
    /// Nodes whose user was away from the room when it was sent (they owe it all the same).
    sent_while_away: Vec<usize>,
    result: Result<String, (u16, String)>,
}

/// An event some node acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    event_id: String,
    label: String,
    /// Nodes whose user was away from the room when it was sent (reported apart; owed all
    /// the same).
    sent_while_away: Vec<usize>,
}

#[derive(Default)]
struct Record {
    acked: Vec<Acked>,
    forbidden: Vec<String>,
    notes: Vec<String>,
}

impl Record {
    fn take(&mut self, sent: Vec<Sent>) {
        for s in sent {
            match s.result {
                Ok(event_id) => self.acked.push(Acked {
                    event_id,
                    label: s.label,
                    sent_while_away: s.sent_while_away,
                }),
                Err((403, e)) => self
                    .forbidden
                    .push(format!("node {} {}: 403 {e}", s.node, s.label)),
                Err((status, e)) => {
                    let status = if status == 0 {
                        "no answer".to_owned()
                    } else {
                        status.to_string()
                    };
                    self.notes.push(format!(
                        "node {} {}: not acknowledged ({status}): {e}",
                        s.node, s.label
                    ));
                }
            }
        }
    }
}

/// Sends `count` text messages one after another as `api`'s user.
async fn send_messages(
    api: Api,
    room: String,
    node: usize,
    tag: String,
    count: usize,
    sent_while_away: Vec<usize>,
) -> Vec<Sent> {
    let mut out = Vec::new();
    for k in 0..count {
        let label = format!("{tag} node {node} msg {k}");
        let path = format!(
            "/rooms/{}/send/m.room.message/{}",
            enc(&room),
            crate::fresh_txn()
        );
        let body = json!({ "msgtype": "m.text", "body": label });
        let result = event_id_of(api.call(Method::PUT, &path, Some(body)).await);
        out.push(Sent {
            node,
            label,
            sent_while_away: sent_while_away.clone(),
            result,
        });
    }
    out
}

fn event_id_of(resp: Result<(u16, Value), String>) -> Result<String, (u16, String)> {
    match resp {
        Ok((200, v)) => v["event_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| (200, format!("no event_id in {v}"))),
        Ok((s, v)) => Err((s, v.to_string())),
        Err(e) => Err((0, e)),
    }
}

async fn set_topic(api: Api, room: String, node: usize, tag: String) -> Vec<Sent> {
    let label = format!("{tag} topic by node {node}");
    let path = format!("/rooms/{}/state/m.room.topic/", enc(&room));
    let result = event_id_of(
        api.call(Method::PUT, &path, Some(json!({ "topic": label })))
            .await,
    );
    vec![Sent {
        node,
        label,
        sent_while_away: Vec::new(),
        result,
    }]
}

/// Adds an entry for a made-up user to the power levels, as the sender's node sees them, then
/// sends two messages (whose auth events name the new power levels).
async fn change_power(
    api: Api,
    room: String,
    node: usize,
    tag: String,
    ghost: String,
    level: u64,
) -> Vec<Sent> {
    let label = format!("{tag} power levels by node {node}");
    let path = format!("/rooms/{}/state/m.room.power_levels/", enc(&room));
    let result = match api.call(Method::GET, &path, None).await {
        Ok((200, mut content)) => {
            content["users"][ghost] = json!(level);
            event_id_of(api.call(Method::PUT, &path, Some(content)).await)
        }
        Ok((s, v)) => Err((s, format!("reading power levels: {v}"))),
        Err(e) => Err((0, e)),
    };
    let mut out = vec![Sent {
        node,
        label,
        sent_while_away: Vec::new(),
        result,
    }];
    let tag = format!("{tag} after power levels:");
    out.extend(send_messages(api, room, node, tag, 2, Vec::new()).await);
    out
}

async fn collect(set: &mut JoinSet<Vec<Sent>>) -> Vec<Sent> {
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(v) => out.extend(v),
            Err(e) => out.push(Sent {
                node: usize::MAX,
                label: "task".into(),
                sent_while_away: Vec::new(),
                result: Err((0, format!("task failed: {e}"))),
            }),
        }
    }
    out
}

/// Polls `check` every [`POLL`] until it yields `Ok`, or returns the last `Err` after `wait`.
async fn poll_until<F, Fut>(wait: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + wait;
    loop {
        let err = match check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(err);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `user`'s membership in `room` as `api`'s node sees it.
async fn membership(api: &Api, room: &str, user: &str) -> Result<String, String> {
    let path = format!("/rooms/{}/state/m.room.member/{}", enc(room), enc(user));
    match api.call(Method::GET, &path, None).await? {
        (200, v) => Ok(v["membership"].as_str().unwrap_or_default().to_owned()),
        (s, v) => Err(format!("{s} {v}")),
    }
}

/// Tries `POST /join/{room}?server_name=` a few times; returns the failures along the way.
async fn join_via(
    api: &Api,
    room: &str,
    server: &str,
    attempts: u32,
) -> Result<Vec<String>, String> {
    let path = format!("/join/{}?server_name={}", enc(room), enc(server));
    let mut failures = Vec::new();
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match api.call(Method::POST, &path, Some(json!({}))).await {
            Ok((200, _)) => return Ok(failures),
            Ok((s, v)) => failures.push(format!("{s} {v}")),
            Err(e) => failures.push(e),
        }
    }
    Err(failures.join("; "))
}

/// Runs one seed from start to verdict. Never panics on a node's misbehaviour: everything
/// lands in the report.
pub async fn run_seed(opts: &Options) -> SeedReport {
    let started = Instant::now();
    let plan = Plan::new(opts.seed, opts.nodes, opts.rounds);
    let mut report = SeedReport {
        seed: opts.seed,
        nodes: opts.nodes,
        plan: plan.describe(),
        per_node: vec![NodeFigures::default(); opts.nodes],
        ..SeedReport::default()
    };
    let mut cluster = match Cluster::new(opts.neurite.clone()) {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let mut rec = Record::default();
    match scenario(&mut cluster, &plan, &mut rec, opts.seed).await {
        Ok((room, healed)) => {
            settle(&cluster, &room, &rec, opts.settle, healed, &mut report).await;
        }
        Err(e) => report.error = Some(e),
    }
    for p in &mut cluster.procs {
        p.kill();
    }
    for (i, p) in cluster.procs.iter().enumerate() {
        report.per_node[i].rejected_in_log = rejected_lines(&p.log).len();
    }
    report.acknowledged = rec.acked.len();
    report.forbidden = rec.forbidden;
    report.notes = rec.notes;
    if !report.passed() {
        report.logs = log_excerpts(&cluster, &report);
    }
    if (opts.keep_all || (opts.keep_failed && !report.passed()))
        && let Some(root) = cluster.root.take()
    {
        report.kept = Some(root.keep());
    }
    report.elapsed = started.elapsed();
    report
}

/// Start-up, set-up, calm burst and fault rounds. Returns the room and when the last fault
/// healed.
async fn scenario(
    cluster: &mut Cluster,
    plan: &Plan,
    rec: &mut Record,
    seed: u64,
) -> Result<(String, Instant), String> {
    for peers in &plan.peers {
        let addrs = peers
            .iter()
            .map(|&j| cluster.procs[j].p2p_addr.clone())
            .collect();
        cluster.add(addrs).await?;
    }
    register_users(cluster).await?;
    let room = set_up_room(cluster, seed, rec).await?;

    // Calm burst: everyone sends at once.
    let mut set = JoinSet::new();
    for i in 0..cluster.procs.len() {
        for k in 0..CALM_MESSAGES {
            set.spawn(send_messages(
                cluster.api(i),
                room.clone(),
                i,
                format!("calm {k}"),
                1,
                Vec::new(),
            ));
        }
    }
    rec.take(collect(&mut set).await);

    let mut healed = Instant::now();
    for (r, round) in plan.rounds.iter().enumerate() {
        healed = fault_round(cluster, &room, r, round, rec).await?;
    }
    Ok((room, healed))
}

/// One user per node, `u<i>`.
async fn register_users(cluster: &mut Cluster) -> Result<(), String> {
    let n = cluster.procs.len();
    let mut set = JoinSet::new();
    for i in 0..n {
        let api = cluster.api(i);
        set.spawn(async move {
            let body = json!({
                "username": format!("u{i}"),
                "password": "churn churn churn",
                "auth": { "type": "m.login.dummy" },
            });
            (i, api.ok(Method::POST, "/register", Some(body)).await)
        });
    }
    let mut users = vec![(String::new(), String::new()); n];
    while let Some(r) = set.join_next().await {
        let (i, body) = r.map_err(|e| format!("register task: {e}"))?;
        let body = body.map_err(|e| format!("node {i}: register: {e}"))?;
        users[i] = (
            body["user_id"].as_str().unwrap_or_default().to_owned(),
            body["access_token"].as_str().unwrap_or_default().to_owned(),
        );
    }
    cluster.users = users;
    Ok(())
}

/// Node 0's user creates the room and invites everyone, one at a time; then gives every
/// member power level 100 (so anyone may change the state) and makes the room public (so a
/// member who left may join again). Returns the room id once every node has that state.
async fn set_up_room(cluster: &Cluster, seed: u64, rec: &mut Record) -> Result<String, String> {
    let n = cluster.procs.len();
    let owner = cluster.api(0);
    let room = owner
        .ok(
            Method::POST,
            "/createRoom",
            Some(json!({ "preset": "private_chat", "name": format!("churn {seed}") })),
        )
        .await
        .map_err(|e| format!("create room: {e}"))?["room_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let server0 = cluster.procs[0].server_name.clone();
    for i in 1..n {
        let invitee = cluster.user(i).to_owned();
        let path = format!("/rooms/{}/invite", enc(&room));
        let mut invited = Err(String::new());
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            invited = owner
                .ok(Method::POST, &path, Some(json!({ "user_id": invitee })))
                .await;
            match &invited {
                Ok(_) => break,
                Err(e) => rec
                    .notes
                    .push(format!("set-up: inviting node {i} failed: {e}")),
            }
        }
        invited.map_err(|e| format!("inviting node {i}'s user: {e}"))?;
        let api = cluster.api(i);
        wait_for_invite(&api, &room)
            .await
            .map_err(|e| format!("node {i}'s user never saw the invite: {e}"))?;
        let hiccups = join_via(&api, &room, &server0, 3)
            .await
            .map_err(|e| format!("node {i}'s user could not join: {e}"))?;
        for h in hiccups {
            rec.notes
                .push(format!("set-up: node {i} join attempt failed: {h}"));
        }
    }
    let path = format!("/rooms/{}/joined_members", enc(&room));
    poll_until(SETUP_WAIT, || async {
        let v = owner.ok(Method::GET, &path, None).await?;
        let joined = v["joined"].as_object().map_or(0, |m| m.len());
        if joined == n {
            Ok(())
        } else {
            Err(format!("node 0 sees {joined} of {n} members joined"))
        }
    })
    .await?;

    let pl_path = format!("/rooms/{}/state/m.room.power_levels/", enc(&room));
    let mut levels = owner
        .ok(Method::GET, &pl_path, None)
        .await
        .map_err(|e| format!("power levels: {e}"))?;
    // (Room version 12 gives the creator unlimited power and no entry of its own.)
    for (user, _) in cluster.users.iter().skip(1) {
        levels["users"][user] = json!(100);
    }
    let pl_id = owner
        .ok(Method::PUT, &pl_path, Some(levels))
        .await
        .map_err(|e| format!("raising power levels: {e}"))?["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let jr_path = format!("/rooms/{}/state/m.room.join_rules/", enc(&room));
    let jr_id = owner
        .ok(
            Method::PUT,
            &jr_path,
            Some(json!({ "join_rule": "public" })),
        )
        .await
        .map_err(|e| format!("public join rule: {e}"))?["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for (event_id, label) in [(pl_id, "set-up power levels"), (jr_id, "set-up join rule")] {
        rec.acked.push(Acked {
            event_id,
            label: label.into(),
            sent_while_away: Vec::new(),
        });
    }
    for i in 1..n {
        let api = cluster.api(i);
        let (pl_path, jr_path) = (&pl_path, &jr_path);
        poll_until(SETUP_WAIT, || {
            let api = api.clone();
            async move {
                let pl = api.ok(Method::GET, pl_path, None).await?;
                let jr = api.ok(Method::GET, jr_path, None).await?;
                if pl["users"].as_object().map_or(0, |u| u.len()) >= n - 1
                    && jr["join_rule"] == "public"
                {
                    Ok(())
                } else {
                    Err("power levels or join rule not there yet".into())
                }
            }
        })
        .await
        .map_err(|e| format!("set-up state never reached node {i}: {e}"))?;
    }
    Ok(room)
}

async fn wait_for_invite(api: &Api, room: &str) -> Result<(), String> {
    let deadline = Instant::now() + SETUP_WAIT;
    let mut since: Option<String> = None;
    loop {
        let mut path = "/sync?timeout=1000".to_owned();
        if let Some(s) = &since {
            path.push_str(&format!("&since={}", enc(s)));
        }
        let v = api.ok(Method::GET, &path, None).await?;
        if v["rooms"]["invite"][room].is_object() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no invite within {SETUP_WAIT:?}"));
        }
        since = v["next_batch"].as_str().map(str::to_owned);
    }
}

/// One fault round: hurt the victim; everyone else sends, sets the topic and the power
/// levels; a member leaves and rejoins; heal. Returns when the victim was healed.
async fn fault_round(
    cluster: &mut Cluster,
    room: &str,
    r: usize,
    round: &Round,
    rec: &mut Record,
) -> Result<Instant, String> {
    let v = round.victim;
    let tag = format!("round {r}");
    let pid = cluster.procs[v]
        .pid()
        .ok_or_else(|| format!("node {v} is not running"))?;
    let hurt_at = Instant::now();
    match round.fault {
        Fault::Kill { .. } => cluster.procs[v].kill(),
        Fault::Stop { .. } => signal(pid, "-STOP")?,
    }

    let mut set = JoinSet::new();
    for (i, &count) in round.messages.iter().enumerate() {
        if count > 0 {
            set.spawn(send_messages(
                cluster.api(i),
                room.to_owned(),
                i,
                tag.clone(),
                count,
                Vec::new(),
            ));
        }
    }
    set.spawn(set_topic(
        cluster.api(round.topic_by),
        room.to_owned(),
        round.topic_by,
        tag.clone(),
    ));
    let by = round.power_by;
    set.spawn(change_power(
        cluster.api(by),
        room.to_owned(),
        by,
        tag.clone(),
        format!("@ghost-{r}-{by}:{}", cluster.procs[by].server_name),
        r as u64 + 1,
    ));
    rec.take(collect(&mut set).await);

    let rejoined = match round.leave {
        Some((leaver, via)) => leave_and_rejoin(cluster, room, &tag, round, leaver, via, rec).await,
        None => None,
    };

    tokio::time::sleep_until((hurt_at + round.fault.length()).into()).await;
    match round.fault {
        Fault::Kill { .. } => {
            let bin = cluster.bin.clone();
            launch(&bin, &mut cluster.procs[v], false)
                .await
                .map_err(|e| format!("{tag}: restarting node {v}: {e}"))?;
        }
        Fault::Stop { .. } => signal(pid, "-CONT")?,
    }
    let healed = Instant::now();

    // Let the live nodes learn of the rejoin before anyone sends again, so that later messages
    // are owed to the rejoined node (bounded; only noted if it lapses).
    if let Some(leaver) = rejoined {
        let user = cluster.user(leaver).to_owned();
        let watchers: Vec<(usize, Api)> = (0..cluster.procs.len())
            .filter(|&i| i != v)
            .map(|i| (i, cluster.api(i)))
            .collect();
        let seen = poll_until(REJOIN_WAIT, || async {
            let mut behind = Vec::new();
            for (i, api) in &watchers {
                match membership(api, room, &user).await {
                    Ok(m) if m == "join" => {}
                    Ok(m) => behind.push(format!("node {i} sees {m:?}")),
                    Err(e) => behind.push(format!("node {i}: {e}")),
                }
            }
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind.join(", "))
            }
        })
        .await;
        if let Err(e) = seen {
            rec.notes.push(format!(
                "{tag}: node {leaver}'s rejoin not seen everywhere within {REJOIN_WAIT:?}: {e}"
            ));
        }
    }
    Ok(healed)
}

/// `leaver`'s user leaves and joins again through `via` while the other live users send.
/// Returns the leaver if it is back in the room.
///
/// The leaver still owes every acknowledged event, including those sent while its user was
/// away: a node that joins again fetches what happened meanwhile. One wait keeps the scenario
/// fair (bounded, only noted if it lapses): the leaver rejoins only once `via` has seen the
/// leave, since a join made on a graph that lacks the leave would race it in state
/// resolution, which may then rightly keep the leave.
async fn leave_and_rejoin(
    cluster: &Cluster,
    room: &str,
    tag: &str,
    round: &Round,
    leaver: usize,
    via: usize,
    rec: &mut Record,
) -> Option<usize> {
    let api = cluster.api(leaver);
    let mut set = JoinSet::new();
    for (i, &count) in round.messages_during_leave.iter().enumerate() {
        if count > 0 {
            set.spawn(send_messages(
                cluster.api(i),
                room.to_owned(),
                i,
                format!("{tag} while node {leaver} is away:"),
                count,
                vec![leaver],
            ));
        }
    }
    let via_api = cluster.api(via);
    let via_server = cluster.procs[via].server_name.clone();
    let user = cluster.user(leaver).to_owned();
    let room2 = room.to_owned();
    let back = format!("{tag} back:");
    let bounce = tokio::spawn(async move {
        let mut notes = Vec::new();
        let path = format!("/rooms/{}/leave", enc(&room2));
        match api.call(Method::POST, &path, Some(json!({}))).await {
            Ok((200, _)) => {}
            Ok((s, v)) => return Err(format!("leave: {s} {v}")),
            Err(e) => return Err(format!("leave: {e}")),
        }
        let seen = poll_until(REJOIN_WAIT, || async {
            match membership(&via_api, &room2, &user).await?.as_str() {
                "leave" => Ok(()),
                m => Err(format!("it sees {m:?}")),
            }
        })
        .await;
        if let Err(e) = seen {
            notes.push(format!(
                "node {via} had not seen the leave within {REJOIN_WAIT:?} ({e}); rejoining anyway"
            ));
        }
        let hiccups = join_via(&api, &room2, &via_server, 2).await?;
        notes.extend(
            hiccups
                .into_iter()
                .map(|h| format!("rejoin attempt failed: {h}")),
        );
        // Back in the room, it speaks at once (its messages' auth events name the new join).
        let sent = send_messages(api, room2, leaver, back, 2, Vec::new()).await;
        Ok((notes, sent))
    });
    rec.take(collect(&mut set).await);
    match bounce.await {
        Ok(Ok((notes, sent))) => {
            for note in notes {
                rec.notes
                    .push(format!("{tag}: node {leaver} through node {via}: {note}"));
            }
            rec.take(sent);
            Some(leaver)
        }
        Ok(Err(e)) => {
            rec.notes.push(format!(
                "{tag}: node {leaver} could not leave and rejoin through node {via}: {e}"
            ));
            None
        }
        Err(e) => {
            rec.notes.push(format!("{tag}: leave task failed: {e}"));
            None
        }
    }
}

// ---- Settling and the verdict ----

type StateSet = BTreeSet<(String, String, String)>;

/// What one look at one node found.
struct Look {
    present: HashSet<String>,
    state: Option<StateSet>,
    error: Option<String>,
}

/// Asks `api`'s node which of `ids` it holds, and for its room state.
async fn look(api: Api, room: String, ids: Vec<String>) -> Look {
    let mut out = Look {
        present: HashSet::new(),
        state: None,
        error: None,
    };
    for id in ids {
        let path = format!("/rooms/{}/event/{}", enc(&room), enc(&id));
        match api.call(Method::GET, &path, None).await {
            Ok((200, _)) => {
                out.present.insert(id);
            }
            Ok((404, _)) => {}
            Ok((s, v)) => out.error = Some(format!("GET event: {s} {v}")),
            Err(e) => out.error = Some(e),
        }
    }
    match api
        .call(Method::GET, &format!("/rooms/{}/state", enc(&room)), None)
        .await
    {
        Ok((200, Value::Array(events))) => {
            out.state = Some(
                events
                    .iter()
                    .map(|e| {
                        let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                        (s("type"), s("state_key"), s("event_id"))
                    })
                    .collect(),
            );
        }
        Ok((s, v)) => out.error = Some(format!("GET state: {s} {v}")),
        Err(e) => out.error = Some(e),
    }
    out
}

/// Polls every node until all hold every acknowledged event owed to them and agree on the
/// state, or `wait` has passed since `healed`; fills in the verdict and the figures.
async fn settle(
    cluster: &Cluster,
    room: &str,
    rec: &Record,
    wait: Duration,
    healed: Instant,
    report: &mut SeedReport,
) {
    let n = cluster.procs.len();
    let deadline = healed + wait;
    let mut present: Vec<HashSet<String>> = vec![HashSet::new(); n];
    loop {
        let mut set = JoinSet::new();
        for (i, have) in present.iter().enumerate() {
            let ids: Vec<String> = rec
                .acked
                .iter()
                .filter(|a| !have.contains(&a.event_id))
                .map(|a| a.event_id.clone())
                .collect();
            let api = cluster.api(i);
            let room = room.to_owned();
            set.spawn(async move { (i, look(api, room, ids).await) });
        }
        let mut states: Vec<Option<StateSet>> = vec![None; n];
        let mut errors: Vec<Option<String>> = vec![None; n];
        while let Some(r) = set.join_next().await {
            let Ok((i, l)) = r else { continue };
            present[i].extend(l.present);
            states[i] = l.state;
            errors[i] = l.error;
        }
        let all_held = (0..n).all(|i| rec.acked.iter().all(|a| present[i].contains(&a.event_id)));
        let agree = states.iter().all(|s| s.is_some() && *s == states[0]);
        let now = Instant::now();
        if (all_held && agree) || now >= deadline {
            report.converged = all_held && agree;
            if report.converged {
                report.convergence = Some(now.saturating_duration_since(healed));
            }
            fill_figures(report, rec, &present, &states, &errors);
            return;
        }
        // Every look asks again for each missing event: look less often once it drags on.
        let pause = if now < healed + Duration::from_secs(10) {
            POLL
        } else {
            SLOW_POLL
        };
        tokio::time::sleep(pause).await;
    }
}

fn fill_figures(
    report: &mut SeedReport,
    rec: &Record,
    present: &[HashSet<String>],
    states: &[Option<StateSet>],
    errors: &[Option<String>],
) {
    let n = present.len();
    // The most common state is the reference; ties go to the lowest node.
    let mut counts: BTreeMap<&StateSet, usize> = BTreeMap::new();
    for s in states.iter().flatten() {
        *counts.entry(s).or_default() += 1;
    }
    let reference = states
        .iter()
        .flatten()
        .max_by_key(|s| {
            (
                counts[s],
                std::cmp::Reverse(states.iter().position(|x| x.as_ref() == Some(*s))),
            )
        })
        .cloned();
    for i in 0..n {
        let f = &mut report.per_node[i];
        for a in &rec.acked {
            let has = present[i].contains(&a.event_id);
            if a.sent_while_away.contains(&i) {
                f.sent_while_away += 1;
                f.away_present += usize::from(has);
            }
            f.expected += 1;
            if has {
                f.present += 1;
            } else {
                f.missing.push(format!("{} ({})", a.label, a.event_id));
            }
        }
        f.state_entries = states[i].as_ref().map(BTreeSet::len);
        f.state_differs = states[i].is_none() || states[i] != reference;
        f.error.clone_from(&errors[i]);
    }
    // Every (type, state_key) whose event is not the same on all nodes.
    let mut keys: BTreeMap<(String, String), Vec<Option<String>>> = BTreeMap::new();
    for (i, s) in states.iter().enumerate() {
        for (ty, key, id) in s.iter().flatten() {
            keys.entry((ty.clone(), key.clone()))
                .or_insert_with(|| vec![None; n])[i] = Some(id.clone());
        }
    }
    for ((ty, key), ids) in keys {
        let answered: Vec<&Option<String>> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| states[*i].is_some())
            .map(|(_, id)| id)
            .collect();
        if answered.windows(2).all(|w| w[0] == w[1]) {
            continue;
        }
        let mut names: BTreeMap<&str, String> = BTreeMap::new();
        let mut by_node = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if states[i].is_none() {
                by_node.push(format!("{i}=?"));
                continue;
            }
            let name = match id {
                Some(id) => {
                    let next = format!("e{}", names.len() + 1);
                    names.entry(id.as_str()).or_insert(next).clone()
                }
                None => "absent".to_owned(),
            };
            by_node.push(format!("{i}={name}"));
        }
        let legend: Vec<String> = names.iter().map(|(id, n)| format!("{n}={id}")).collect();
        report.state_diff.push(format!(
            "({ty}, {key:?}): {}  [{}]",
            by_node.join(" "),
            legend.join(" ")
        ));
    }
}

// ---- Logs ----

fn read_log(path: &Path) -> Vec<String> {
    fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(strip_ansi)
                .collect()
        })
        .unwrap_or_default()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn rejected_lines(path: &Path) -> Vec<String> {
    read_log(path)
        .into_iter()
        .filter(|l| l.contains("rejected"))
        .collect()
}

fn clip(line: &str) -> &str {
    match line.char_indices().nth(400) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// The interesting ends of the logs: "rejected" lines of every node, and the last lines of
/// the nodes that lack events or disagree.
fn log_excerpts(cluster: &Cluster, report: &SeedReport) -> String {
    let mut s = String::new();
    for (i, p) in cluster.procs.iter().enumerate() {
        let rejected = rejected_lines(&p.log);
        let figures = &report.per_node[i];
        let troubled =
            !figures.missing.is_empty() || figures.state_differs || report.error.is_some();
        if rejected.is_empty() && !troubled {
            continue;
        }
        let _ = writeln!(s, "---- node {i} ({})", p.log.display());
        if !rejected.is_empty() {
            let _ = writeln!(s, "  {} \"rejected\" lines, the last ones:", rejected.len());
            for line in rejected.iter().rev().take(6).rev() {
                let _ = writeln!(s, "  | {}", clip(line));
            }
        }
        if troubled {
            let lines = read_log(&p.log);
            let _ = writeln!(s, "  last lines:");
            for line in lines.iter().rev().take(12).rev() {
                let _ = writeln!(s, "  | {}", clip(line));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seeds("3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_seeds("4,9").unwrap(), vec![4, 9]);
        assert_eq!(parse_seeds("5..=7").unwrap(), vec![5, 6, 7]);
        assert!(parse_seeds("x").is_err());
    }

    #[test]
    fn plans_follow_the_seed() {
        let a = Plan::new(7, 6, 3);
        let b = Plan::new(7, 6, 3);
        assert_eq!(a.describe(), b.describe());
        assert_ne!(a.describe(), Plan::new(8, 6, 3).describe());
        for (i, peers) in a.peers.iter().enumerate().skip(1) {
            assert!(!peers.is_empty() && peers.len() <= 2);
            assert!(peers.iter().all(|&p| p < i));
        }
        for round in &a.rounds {
            assert_eq!(round.messages[round.victim], 0);
            assert_ne!(round.topic_by, round.victim);
            assert_ne!(round.power_by, round.victim);
            if let Some((leaver, via)) = round.leave {
                assert!(leaver != 0 && leaver != round.victim && via != leaver);
                assert_ne!(via, round.victim);
            }
        }
    }
}
