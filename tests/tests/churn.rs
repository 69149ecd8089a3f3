//! Convergence under churn: real `neurite` processes in one room, all sending at once while
//! nodes are killed and restarted or frozen and resumed, state changes and a member leaves
//! and rejoins. Afterwards every node must hold every acknowledged event and all must agree
//! on the room state (see `neurite_tests::churn`).
//!
//! Needs the `neurite` binary (`cargo build -p neurite-demo`; `cargo test --workspace` builds
//! it) or `NEURITE_BIN` (use it when several checkouts share one target directory: the
//! `neurite` next to the test is whichever checkout built last). `NEURITE_CHURN_SEEDS` picks
//! the seeds (a count `N`, a list `3,7` or a range `5..=9`; default 1 and 2),
//! `NEURITE_CHURN_NODES` the node count (default 6). The test stops at the first failing seed;
//! longer runs: the `converge` binary.

use neurite_tests::churn::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_converge_under_churn() {
    let neurite = churn::neurite_binary().unwrap_or_else(|e| panic!("{e}"));
    let nodes = churn::nodes_from_env(churn::DEFAULT_NODES);
    for seed in churn::seeds_from_env(1..=2) {
        let report = churn::run_seed(&Options::new(seed, nodes, neurite.clone())).await;
        println!("{}", report.json());
        if !report.passed() {
            eprint!("{}{}", report.details(), report.logs);
            panic!(
                "seed {seed} with {nodes} nodes: {} (details above); replay with \
                 `cargo run -p neurite-tests --bin converge -- --first-seed {seed} --seeds 1 \
                 --nodes {nodes} --logs`",
                report.verdict()
            );
        }
    }
}
