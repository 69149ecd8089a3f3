//! The app's listeners: [`HomeserverListener`] callbacks, the [`ListenerHandle`] each
//! registration returns, and the one place a homeserver's events fan out to all of them.
//!
//! A homeserver keeps its listeners in [`Listeners`]. Every state change and every peer
//! event goes through [`Listeners`]' methods, which call each registered listener in the
//! order they were added. A listener stays registered until its handle is cancelled or
//! dropped (freed by the foreign side: garbage-collected or closed in Kotlin, released in
//! Swift, collected in Python), so an app keeps the handle for as long as it wants events.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, Weak},
};

use neurite_core::p2p::{P2p, PeerEvent};
use tokio::sync::broadcast::{Receiver, error::RecvError};

use crate::{HomeserverState, PeerInfo, lock};

/// Callbacks from a homeserver, implemented by the app. They run on the library's threads
/// and should return quickly.
#[uniffi::export(with_foreign)]
pub trait HomeserverListener: Send + Sync {
    /// The homeserver started, stopped, or failed to start.
    fn on_state_changed(&self, state: HomeserverState);
    /// A connection to a peer opened (the first one to that peer), or the path to a
    /// connected peer changed (`peer.path`: a relayed connection upgraded to a direct one).
    fn on_peer_connected(&self, peer: PeerInfo);
    /// The last connection to a peer closed.
    fn on_peer_disconnected(&self, peer_id: String);
    /// The addresses the homeserver tells peers about (what
    /// [`crate::Homeserver::listen_addrs`] gives now): once when it has started, then at each
    /// change, e.g. a relay accepted or lost its reservation, or the network went off or on.
    fn on_addresses_changed(&self, addrs: Vec<String>);
}

/// The registered listeners, each under the number its handle holds.
#[derive(Default)]
struct Registry {
    next_id: u64,
    entries: Vec<(u64, Arc<dyn HomeserverListener>)>,
}

/// A homeserver's listeners and the fan-out of its events to them. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Listeners {
    registry: Arc<Mutex<Registry>>,
}

impl Listeners {
    /// Registers `listener` until the returned handle is cancelled or dropped.
    pub(crate) fn add(&self, listener: Arc<dyn HomeserverListener>) -> ListenerHandle {
        let mut registry = lock(&self.registry);
        let id = registry.next_id;
        registry.next_id += 1;
        registry.entries.push((id, listener));
        ListenerHandle {
            registry: Arc::downgrade(&self.registry),
            id,
        }
    }

    pub(crate) fn state_changed(&self, state: HomeserverState) {
        self.each(|l| l.on_state_changed(state.clone()));
    }

    pub(crate) fn peer_connected(&self, peer: PeerInfo) {
        self.each(|l| l.on_peer_connected(peer.clone()));
    }

    pub(crate) fn peer_disconnected(&self, peer_id: String) {
        self.each(|l| l.on_peer_disconnected(peer_id.clone()));
    }

    pub(crate) fn addresses_changed(&self, addrs: Vec<String>) {
        self.each(|l| l.on_addresses_changed(addrs.clone()));
    }

    fn is_empty(&self) -> bool {
        lock(&self.registry).entries.is_empty()
    }

    /// Calls `f` on every listener registered now. The lock is not held during the calls, so
    /// a callback may add listeners or cancel handles (its own too).
    fn each(&self, f: impl Fn(&dyn HomeserverListener)) {
        let listeners: Vec<_> = lock(&self.registry)
            .entries
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        for listener in listeners {
            f(listener.as_ref());
        }
    }
}

/// Keeps a listener registered with its homeserver: cancelling it, or letting it go (the
/// foreign side frees it), unregisters the listener. Events that happen after that do not
/// reach it; a callback already running on another thread at that moment still finishes.
/// Outliving the homeserver is harmless.
#[derive(uniffi::Object)]
pub struct ListenerHandle {
    registry: Weak<Mutex<Registry>>,
    id: u64,
}

#[uniffi::export]
impl ListenerHandle {
    /// Unregisters the listener now. Calling it again does nothing.
    pub fn cancel(&self) {
        if let Some(registry) = self.registry.upgrade() {
            lock(&registry).entries.retain(|(id, _)| *id != self.id);
        }
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Passes peer connections and disconnections to the listeners.
///
/// `events` is subscribed before this task starts; peers that connected before that (static
/// peers dialled while the node started) are reported from a snapshot taken after
/// subscribing. `reported` keeps each peer to one `on_peer_connected` per connection and a
/// disconnection is only reported for a peer whose connection was.
pub(crate) async fn forward_peer_events(
    p2p: P2p,
    mut events: Receiver<PeerEvent>,
    listeners: Listeners,
) {
    let mut reported = HashSet::new();
    // Not marked seen: the listeners hear the addresses once now, then at every change.
    let mut addrs = p2p.watch_addrs();
    addrs.mark_changed();
    for peer in p2p.peers().await.into_iter().filter(|p| p.connected) {
        reported.insert(peer.peer_id);
        listeners.peer_connected(PeerInfo::from(peer));
    }
    loop {
        let event = tokio::select! {
            changed = addrs.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = p2p.listen_addrs().iter().map(|a| a.to_string()).collect();
                listeners.addresses_changed(now);
                continue;
            }
            event = events.recv() => match event {
                Ok(event) => event,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            },
        };
        match event {
            PeerEvent::Connected(peer, path) | PeerEvent::PathChanged(peer, path) => {
                let first = reported.insert(peer);
                let upgraded = matches!(event, PeerEvent::PathChanged(..));
                if !(first || upgraded) || listeners.is_empty() {
                    continue;
                }
                let info = p2p
                    .peers()
                    .await
                    .into_iter()
                    .find(|p| p.peer_id == peer)
                    .map(PeerInfo::from)
                    .unwrap_or_else(|| PeerInfo::connected_inbound(&p2p, &peer, path));
                listeners.peer_connected(info);
            }
            PeerEvent::Disconnected(peer) => {
                if reported.remove(&peer) {
                    listeners.peer_disconnected(peer.to_string());
                }
            }
        }
    }
}
