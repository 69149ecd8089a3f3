//! Peer exchange (`/neurite/peers/1`): asking a connected peer for the addresses of another,
//! answering such questions, and the back-off that bounds how often a destination is asked
//! about.

use std::{collections::HashMap, time::Duration};

use libp2p::{Multiaddr, PeerId};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{Command, PEERS_MAX_ADDRS, PEERS_MAX_BYTES, PEERS_PROTOCOL};

/// Most destinations whose back-off is remembered; past it, no new destination is asked about
/// until one's back-off is over.
const MAX_SOUGHT: usize = 256;
/// The first wait before a destination is asked about again.
const ASK_BACKOFF_MIN: Duration = Duration::from_secs(30);
/// The longest wait before a destination is asked about again.
const ASK_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);

/// When each destination may be asked about again ([`P2p::find_peer`](super::P2p::find_peer)).
#[derive(Default)]
pub(super) struct Sought {
    /// Per destination: not before this instant, and the wait after that.
    next: HashMap<PeerId, (Instant, Duration)>,
}

impl Sought {
    /// Whether `peer` may be asked about at `now`; if so, the next time is pushed back.
    pub(super) fn may_ask(&mut self, peer: PeerId, now: Instant) -> bool {
        if let Some((not_before, _)) = self.next.get(&peer)
            && *not_before > now
        {
            return false;
        }
        if !self.next.contains_key(&peer) && self.next.len() >= MAX_SOUGHT {
            self.next.retain(|_, (not_before, _)| *not_before > now);
            if self.next.len() >= MAX_SOUGHT {
                return false;
            }
        }
        let wait = self
            .next
            .get(&peer)
            .map_or(ASK_BACKOFF_MIN, |(_, w)| *w)
            .min(ASK_BACKOFF_MAX);
        self.next
            .insert(peer, (now + wait, (wait * 2).min(ASK_BACKOFF_MAX)));
        true
    }

    /// `peer` was reached: the next time it is lost, it may be asked about at once.
    pub(super) fn reached(&mut self, peer: &PeerId) {
        self.next.remove(peer);
    }
}

/// Asks `helper` for the addresses it knows for `peer`: the question is the peer id as text,
/// the answer a JSON array of multiaddrs, each ending in `/p2p/<peer>`.
pub(super) async fn ask_for_peer(
    control: &mut libp2p_stream::Control,
    helper: PeerId,
    peer: PeerId,
) -> std::io::Result<Vec<Multiaddr>> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut stream = control
        .open_stream(helper, PEERS_PROTOCOL)
        .await
        .map_err(std::io::Error::other)?;
    stream.write_all(peer.to_string().as_bytes()).await?;
    stream.close().await?;
    let mut answer = Vec::new();
    stream
        .take(PEERS_MAX_BYTES)
        .read_to_end(&mut answer)
        .await?;
    let addrs: Vec<String> = serde_json::from_slice(&answer).map_err(std::io::Error::other)?;
    // The address book decides what to take; see [`book::admit`].
    Ok(addrs
        .iter()
        .take(PEERS_MAX_ADDRS)
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .collect())
}

/// Answers one peer-address question with the addresses this node had first hand.
pub(super) async fn answer_peer_question(
    stream: libp2p::Stream,
    commands: &mpsc::Sender<Command>,
) -> std::io::Result<()> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut question = Vec::new();
    let mut stream = stream;
    (&mut stream).take(128).read_to_end(&mut question).await?;
    let addrs = match std::str::from_utf8(&question)
        .ok()
        .and_then(|s| s.trim().parse::<PeerId>().ok())
    {
        Some(peer) => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Addresses(peer, tx)).await.is_err() {
                return Ok(());
            }
            rx.await.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let strings: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let body = serde_json::to_vec(&strings).map_err(std::io::Error::other)?;
    stream.write_all(&body).await?;
    stream.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_asked_about_once_per_back_off() {
        let mut sought = Sought::default();
        let peer = PeerId::random();
        let start = Instant::now();
        let at = |d: Duration| start + d;
        assert!(sought.may_ask(peer, start));
        assert!(!sought.may_ask(peer, start), "asked again at once");
        assert!(sought.may_ask(peer, at(ASK_BACKOFF_MIN)));
        // The wait doubles.
        assert!(!sought.may_ask(peer, at(ASK_BACKOFF_MIN * 2)));
        assert!(sought.may_ask(peer, at(ASK_BACKOFF_MIN * 3)));
        // ...up to its longest.
        let mut t = at(ASK_BACKOFF_MIN * 3);
        for _ in 0..20 {
            t += ASK_BACKOFF_MAX;
            assert!(sought.may_ask(peer, t));
        }
        // Once reached, it may be asked about at once when lost again.
        sought.reached(&peer);
        assert!(sought.may_ask(peer, t));
    }

    #[test]
    fn the_destinations_asked_about_are_bounded() {
        let mut sought = Sought::default();
        let start = Instant::now();
        for _ in 0..MAX_SOUGHT {
            assert!(sought.may_ask(PeerId::random(), start));
        }
        assert!(!sought.may_ask(PeerId::random(), start), "past the bound");
        let later = start + ASK_BACKOFF_MIN;
        assert!(
            sought.may_ask(PeerId::random(), later),
            "room once back-offs end"
        );
        assert!(sought.next.len() <= MAX_SOUGHT);
    }
}
