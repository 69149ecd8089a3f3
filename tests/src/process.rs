//! A `neurite` process for the figure binaries (`flood`, `relay_load`): started with a data
//! directory of its own, its first line on stdout (the `listening` JSON) read, and killed when
//! dropped.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use serde_json::Value;

/// A running `neurite` command.
pub struct NeuriteProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for NeuriteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NeuriteProcess {
    /// Runs `bin command --data-dir <a new directory> args…` and waits for its first line on
    /// stdout, returned as JSON.
    pub fn start(bin: &Path, command: &str, args: &[&str]) -> Result<(Self, Value), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args([command, "--data-dir"])
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let process = Self { child, _dir: dir };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let first = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        Ok((process, first))
    }

    /// A `Vm…` field of the process's `/proc/<pid>/status` (e.g. `VmRSS`), in KiB; 0 if it
    /// cannot be read.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}
