//! Wakes long-polling `/sync` requests when anything they might return has changed.

use tokio::sync::watch;

/// A change counter. Every committed write that a sync could return bumps it.
#[derive(Debug)]
pub struct Notifier {
    tx: watch::Sender<u64>,
    closing: std::sync::atomic::AtomicBool,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            tx: watch::channel(0).0,
            closing: Default::default(),
        }
    }
}

impl Notifier {
    /// Tells every waiting sync that something changed.
    pub fn notify(&self) {
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Ends every long-poll now: the node is shutting down.
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.notify();
    }

    /// Whether the node is shutting down.
    pub fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A receiver that sees changes made after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// How many receivers there are: long-polls subscribe before they first look, so once
    /// this has grown by one, a change made from then on reaches the new long-poll.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}
