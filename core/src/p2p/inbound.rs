//! Inbound streams of one protocol, handed to the node through a queue of a chosen size.
//!
//! libp2p-stream's `Control::accept` (0.5.0-alpha) hands inbound streams over through a
//! channel that holds one stream, and its size cannot be set: a stream that finishes
//! negotiating while the previous one has not been taken yet is dropped ("Channel is full").
//! Several streams often finish in one poll of a connection, so under load (a peer holding
//! many streams open, many peers at once) a legitimate peer's new stream could be dropped
//! however quickly the node takes them. This behaviour takes the protocol instead and queues
//! up to a set number of streams; only past that is a stream dropped. Outbound streams still
//! go through libp2p-stream.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol,
    core::{
        Endpoint,
        transport::PortUse,
        upgrade::{DeniedUpgrade, ReadyUpgrade},
    },
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound},
    },
};
use tokio::sync::mpsc;

/// Streams of one protocol from every connection, in arrival order.
pub type Incoming = mpsc::Receiver<(PeerId, Stream)>;

/// Accepts inbound streams of one protocol into a bounded queue.
pub struct Behaviour {
    protocol: StreamProtocol,
    queue: mpsc::Sender<(PeerId, Stream)>,
}

impl Behaviour {
    /// Takes `protocol`; up to `queue` streams wait to be read from the returned receiver.
    pub fn new(protocol: StreamProtocol, queue: usize) -> (Self, Incoming) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (
            Self {
                protocol,
                queue: tx,
            },
            rx,
        )
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocol: self.protocol.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _event: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// One connection's side of [`Behaviour`]: every stream negotiated for the protocol goes
/// into the queue at once.
pub struct Handler {
    peer: PeerId,
    protocol: StreamProtocol,
    queue: mpsc::Sender<(PeerId, Stream)>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, ()> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    // The connection stays open while a stream is; the handler itself does not hold it.
    fn connection_keep_alive(&self) -> bool {
        false
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Infallible, Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), Infallible>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
            && self.queue.try_send((self.peer, stream)).is_err()
        {
            tracing::debug!(peer = %self.peer, protocol = %self.protocol, "inbound stream queue full; stream dropped");
        }
    }
}
