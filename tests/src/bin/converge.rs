//! Soak runs of the convergence scenario: many seeds, one line of figures per seed on stdout,
//! the account of every failing seed on stderr, and a summary. Exits 1 if any seed lost
//! messages, diverged or could not be run.
//!
//! ```sh
//! cargo build -p neurite-demo
//! cargo run -p neurite-tests --bin converge -- --seeds 50 --nodes 10
//! cargo run -p neurite-tests --bin converge -- --first-seed 17 --seeds 1   # replay seed 17
//! ```

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use neurite_tests::churn::{self, Options};
use serde_json::json;

/// Runs the seeded multi-node convergence scenario over real `neurite` processes.
#[derive(Parser)]
#[command(name = "converge")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed; the others follow it.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Nodes per seed (at least 2).
    #[arg(long, default_value_t = churn::DEFAULT_NODES)]
    nodes: usize,
    /// Fault rounds per seed.
    #[arg(long, default_value_t = churn::DEFAULT_ROUNDS)]
    rounds: usize,
    /// Seconds the nodes get to converge after the last fault healed.
    #[arg(long, default_value_t = churn::DEFAULT_SETTLE.as_secs())]
    settle_secs: u64,
    /// The `neurite` binary (default: NEURITE_BIN, else next to this program).
    #[arg(long, value_name = "PATH")]
    neurite: Option<PathBuf>,
    /// Keep the data directories and logs of failing seeds.
    #[arg(long)]
    keep: bool,
    /// Keep the data directories and logs of every seed (they are named on stderr).
    #[arg(long)]
    keep_all: bool,
    /// Print log excerpts of failing seeds.
    #[arg(long)]
    logs: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.nodes < 2 {
        eprintln!("converge: --nodes must be at least 2");
        return ExitCode::from(2);
    }
    let neurite = match args.neurite {
        Some(path) => path,
        None => match churn::neurite_binary() {
            Ok(path) => path,
            Err(e) => {
                eprintln!("converge: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let mut failed = Vec::new();
    let mut times = Vec::new();
    for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
        let mut opts = Options::new(seed, args.nodes, neurite.clone());
        opts.rounds = args.rounds;
        opts.settle = Duration::from_secs(args.settle_secs);
        opts.keep_failed = args.keep;
        opts.keep_all = args.keep_all;
        let report = churn::run_seed(&opts).await;
        println!("{}", report.json());
        if report.passed()
            && let Some(dir) = &report.kept
        {
            eprintln!("seed {seed}: data directories kept in {}", dir.display());
        }
        if report.passed() {
            times.extend(report.convergence);
        } else {
            eprint!("{}", report.details());
            if args.logs {
                eprint!("{}", report.logs);
            }
            eprintln!(
                "replay: cargo run -p neurite-tests --bin converge -- --first-seed {seed} \
                 --seeds 1 --nodes {} --rounds {}",
                args.nodes, args.rounds
            );
            failed.push(seed);
        }
    }
    times.sort();
    let ms = |d: Option<&Duration>| d.map(|d| d.as_millis() as u64);
    println!(
        "{}",
        json!({
            "summary": true,
            "seeds": args.seeds,
            "nodes": args.nodes,
            "passed": args.seeds as usize - failed.len(),
            "failed": failed,
            "convergence_ms_median": ms(times.get(times.len() / 2)),
            "convergence_ms_max": ms(times.last()),
        })
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
