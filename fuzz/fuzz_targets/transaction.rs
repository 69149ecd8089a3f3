//! `PUT /_matrix/federation/v1/send/{txnId}` from a hostile peer whose request signature
//! passed: the body's shape bounds, its parse, the PDUs (verification, then the room graph:
//! auth, state, soft-fail, the holding area) and the EDUs, on a real node with a SQLite
//! database, set up once per process.
//!
//! Input: one mode byte, then the body. Mode bit 0 has the peer hash and sign each PDU as it
//! would its own, so events of the right shape reach the room graph. In the body, `%R` is
//! the node's room, `%S` the peer's server name, `%U` the peer's user (joined to the room),
//! `%L` the node's server name, `%A` its user, and `%C`, `%P`, `%J`, `%M` the ids of the
//! room's create, power levels and join rules events and of the peer user's join.

#![no_main]

use std::{path::PathBuf, sync::LazyLock};

use libfuzzer_sys::fuzz_target;
use neurite_core::fuzzing::TransactionNode;

static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    std::env::temp_dir().join(format!("neurite-fuzz-transaction-{}", std::process::id()))
});

static NODE: LazyLock<TransactionNode> = LazyLock::new(|| {
    let _ = std::fs::remove_dir_all(&*DIR);
    let node = TransactionNode::open(&DIR);
    // libFuzzer ends the process with exit(), which drops no statics.
    extern "C" fn remove_dir() {
        let _ = std::fs::remove_dir_all(&*DIR);
    }
    // SAFETY: registers a plain function with no arguments to run at exit.
    unsafe {
        libc::atexit(remove_dir);
    }
    node
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let sign = mode & 1 != 0;
    match std::str::from_utf8(body) {
        Ok(text) => NODE.send(NODE.expand(text).as_bytes(), sign),
        Err(_) => NODE.send(body, sign),
    };
});
