//! Wakes long-polling `/sync` requests when anything they might return has changed.

use tokio::sync::watch;

/// A change counter. Every committed write that a sync could return bumps it.
#[derive(Debug)]
pub struct Notifier {
    tx: watch::Sender<u64>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            tx: watch::channel(0).0,
        }
    }
}

impl Notifier {
    /// Tells every waiting sync that something changed.
    pub fn notify(&self) {
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees changes made after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}
