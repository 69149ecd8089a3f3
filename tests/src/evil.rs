//! A hostile peer for the tests: a server of its own (a random ed25519 key, hence its own
//! server name and peer id, derived as Neurite derives them) with a libp2p swarm of its own,
//! that sends whatever federation requests and PDUs a test makes it send, signed with its key.
//!
//! It only dials the addresses a [`TestNode`] listens on (loopback) and never uses mDNS.
//! Federation requests the node sends it back are recorded (see [`EvilPeer::received`]) and
//! answered as a test scripts them ([`EvilPeer::answer`]), else `200 {}` for transactions and
//! `404 M_UNRECOGNIZED` otherwise. For floods it also hands out raw federation streams
//! ([`EvilPeer::open_stream`]) and sends bodies of any bytes ([`EvilPeer::request_bytes`]).
//!
//! Every wait is bounded by [`WAIT`].

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, multiaddr::Protocol, noise, swarm::SwarmEvent, tcp,
    yamux,
};
use neurite_core::{
    federation::auth::sign_request,
    identity::{Identity, peer_id_for_server_name},
    p2p::FEDERATION_PROTOCOL,
    rooms::graph::version_rules,
};
use reqwest::{Method, StatusCode};
use ruma::{
    CanonicalJsonObject,
    signatures::{hash_and_sign_event, reference_hash},
};
use serde_json::{Value, json};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::{TestNode, WAIT, assert_status, enc};

/// The room version [`EvilPeer::sign_pdu`] signs for (Neurite's default for new rooms).
pub const DEFAULT_ROOM_VERSION: &str = "12";

/// Largest response body read from the node.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest request body the peer reads of what the node sends it.
const MAX_INBOUND_BYTES: usize = 4 * 1024 * 1024;
/// How many of the node's requests are kept (the oldest are dropped first).
const MAX_RECORDED: usize = 1000;

/// A federation request the node sent to the evil peer.
#[derive(Debug, Clone)]
pub struct InboundRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// JSON body (`Null` if empty or not JSON).
    pub body: Value,
}

/// A scripted answer: given a request the node sent, the status and JSON to answer with.
type Answer = Box<dyn Fn(&InboundRequest) -> (StatusCode, Value) + Send + Sync>;

/// Scripted answers by method and path prefix; the latest added that matches wins.
type Script = Arc<Mutex<Vec<(String, String, Answer)>>>;

/// A hostile server connected to one [`TestNode`].
pub struct EvilPeer {
    seed: [u8; 32],
    identity: Identity,
    target: String,
    target_peer: PeerId,
    control: libp2p_stream::Control,
    received: Arc<Mutex<Vec<InboundRequest>>>,
    script: Script,
    /// Bumped for every request recorded.
    arrivals: watch::Receiver<u64>,
    /// Whether a connection to the node is open.
    link: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for EvilPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl EvilPeer {
    /// A new server with a random key, connected to `node` over loopback.
    pub async fn connect(node: &TestNode) -> Self {
        match Self::try_connect(node).await {
            Ok(peer) => peer,
            Err(e) => panic!("evil peer could not connect: {e}"),
        }
    }

    /// Like [`EvilPeer::connect`], for a node that may refuse the connection.
    pub async fn try_connect(node: &TestNode) -> Result<Self, String> {
        Self::try_connect_as(node, random_seed(), &[])
            .await
            .map(|(peer, _)| peer)
    }

    /// Like [`EvilPeer::connect`], also accepting streams of `protocols` (from before the
    /// connection opens, so the node's first streams find them): one handle per protocol,
    /// in order.
    pub async fn connect_accepting(
        node: &TestNode,
        protocols: &[StreamProtocol],
    ) -> (Self, Vec<libp2p_stream::IncomingStreams>) {
        match Self::try_connect_as(node, random_seed(), protocols).await {
            Ok(connected) => connected,
            Err(e) => panic!("evil peer could not connect: {e}"),
        }
    }

    /// The same server as `self` (same key), connected anew to `node`: drop `self` first, and
    /// the node sees the server leave and come back.
    pub async fn reconnect(node: &TestNode, seed: [u8; 32]) -> Self {
        match Self::try_connect_as(node, seed, &[]).await {
            Ok((peer, _)) => peer,
            Err(e) => panic!("evil peer could not reconnect: {e}"),
        }
    }

    /// The seed of this server's key (for [`EvilPeer::reconnect`]).
    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    async fn try_connect_as(
        node: &TestNode,
        seed: [u8; 32],
        protocols: &[StreamProtocol],
    ) -> Result<(Self, Vec<libp2p_stream::IncomingStreams>), String> {
        let addrs: Vec<Multiaddr> = node
            .node()
            .p2p_addrs()
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter(|a| {
                a.iter()
                    .any(|p| p == Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
            })
            .map(|a| {
                a.iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect()
            })
            .collect();
        assert!(!addrs.is_empty(), "the node listens on no loopback address");
        Self::connect_to_accepting(&node.server_name(), addrs, seed, protocols).await
    }

    /// A server with key `seed` connected to the node named `target` at `addrs` (loopback
    /// addresses of a node in another process, for benchmarks).
    pub async fn connect_to(
        target: &str,
        addrs: Vec<Multiaddr>,
        seed: [u8; 32],
    ) -> Result<Self, String> {
        Self::connect_to_accepting(target, addrs, seed, &[])
            .await
            .map(|(peer, _)| peer)
    }

    async fn connect_to_accepting(
        target: &str,
        addrs: Vec<Multiaddr>,
        seed: [u8; 32],
        protocols: &[StreamProtocol],
    ) -> Result<(Self, Vec<libp2p_stream::IncomingStreams>), String> {
        let identity = Identity::from_seed(&seed).expect("identity");
        let target = target.to_owned();
        let target_peer = peer_id_for_server_name(&target).ok_or("not a Neurite server name")?;
        let keypair = identity.libp2p_keypair().expect("libp2p key");
        let mut swarm: Swarm<libp2p_stream::Behaviour> =
            libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .expect("tcp transport")
                .with_behaviour(|_| libp2p_stream::Behaviour::new())
                .expect("behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
                .build();
        let mut control = swarm.behaviour().new_control();
        let incoming = control
            .accept(FEDERATION_PROTOCOL)
            .expect("accept federation streams");
        let extra = protocols
            .iter()
            .map(|p| control.accept(p.clone()).expect("accept streams"))
            .collect();
        for addr in &addrs {
            swarm.add_peer_address(target_peer, addr.clone());
        }
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(target_peer)
            .addresses(addrs)
            .build();
        swarm.dial(opts).expect("dial the node");

        let (connected_tx, connected_rx) = oneshot::channel::<Result<(), String>>();
        let (link_tx, link) = watch::channel(false);
        let swarm_task = tokio::spawn(drive(swarm, target_peer, connected_tx, link_tx));
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(Mutex::new(Vec::new()));
        let (arrived, arrivals) = watch::channel(0u64);
        let server_task = tokio::spawn(serve(incoming, received.clone(), script.clone(), arrived));
        let peer = Self {
            seed,
            identity,
            target,
            target_peer,
            control,
            received,
            script,
            arrivals,
            link,
            tasks: vec![swarm_task, server_task],
        };
        match tokio::time::timeout(WAIT, connected_rx).await {
            Ok(Ok(Ok(()))) => Ok((peer, extra)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err("the evil peer's swarm stopped".into()),
            Err(_) => Err(format!("no connection within {WAIT:?}")),
        }
    }

    /// This server's name (its public key in base32).
    pub fn server_name(&self) -> &str {
        self.identity.server_name().as_str()
    }

    /// This server's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// This server's public key as libp2p encodes it (protobuf), for identify messages.
    pub fn public_key_protobuf(&self) -> Vec<u8> {
        self.identity
            .libp2p_keypair()
            .expect("libp2p key")
            .public()
            .encode_protobuf()
    }

    /// A new stream of any protocol to the node (bounded by [`WAIT`]).
    pub async fn open_protocol_stream(&self, protocol: StreamProtocol) -> libp2p::Stream {
        let mut control = self.control.clone();
        tokio::time::timeout(WAIT, control.open_stream(self.target_peer, protocol))
            .await
            .expect("opening a stream timed out")
            .unwrap_or_else(|e| panic!("stream to the node: {e}"))
    }

    /// The server name of the node it is connected to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// This server's `localpart` joins `room` through the node (`make_join`, then `send_join`
    /// of the signed template; both must answer 200). Returns the join's id and the template.
    pub async fn join(&self, room: &str, localpart: &str) -> (String, Value) {
        let user = self.user_id(localpart);
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=12",
            enc(room),
            enc(&user)
        );
        let template = assert_status(&self.request(Method::GET, &path, None).await, 200);
        let (join_id, join) = self.sign_pdu(template["event"].clone());
        let path = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            enc(room),
            enc(&join_id)
        );
        assert_status(&self.request(Method::PUT, &path, Some(join)).await, 200);
        (join_id, template)
    }

    /// A user id on this server.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name())
    }

    /// Sends a federation request signed by this server (`X-Matrix`); `path` includes the
    /// query string. Returns the status and the JSON body (`Null` if empty or not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let auth = sign_request(
            &self.identity,
            method.as_str(),
            path,
            &self.target,
            body.as_ref(),
        )
        .expect("sign the request");
        self.request_with_auth(method, path, Some(&auth), body)
            .await
    }

    /// Sends a federation request with the given `Authorization` header (or none), for
    /// requests with forged or missing signatures.
    pub async fn request_with_auth(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        tokio::time::timeout(
            WAIT,
            self.request_inner(method.clone(), path, authorization, body),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path} took longer than {WAIT:?}"))
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.try_request_inner(method, path, authorization, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends a signed request like [`EvilPeer::request`], without a time bound, and hands
    /// back what went wrong instead of failing (for benchmarks).
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let auth = self.authorization(&method, path, body.as_ref());
        self.try_request_inner(method, path, Some(&auth), body)
            .await
    }

    async fn try_request_inner(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let mut control = self.control.clone();
        let stream = control
            .open_stream(self.target_peer, FEDERATION_PROTOCOL)
            .await
            .map_err(|e| format!("stream to the node: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream.compat()))
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.target.as_str());
        if let Some(auth) = authorization {
            req = req.header(hyper::header::AUTHORIZATION, auth);
        }
        let bytes = match &body {
            Some(b) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                serde_json::to_vec(b).expect("JSON body")
            }
            None => Vec::new(),
        };
        let req = req.body(Full::new(Bytes::from(bytes))).expect("request");
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send the request: {e}"))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("read the response: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Adds the content hash and this server's signature to `pdu` (any content, room, prev
    /// and auth events) for room version [`DEFAULT_ROOM_VERSION`]; returns the event id and
    /// the signed event.
    pub fn sign_pdu(&self, pdu: Value) -> (String, Value) {
        self.sign_pdu_for(DEFAULT_ROOM_VERSION, pdu)
    }

    /// Like [`EvilPeer::sign_pdu`], for a given room version.
    pub fn sign_pdu_for(&self, room_version: &str, pdu: Value) -> (String, Value) {
        sign_with(&self.identity, room_version, pdu)
    }

    /// A function that signs PDUs as [`EvilPeer::sign_pdu`] does, for scripted answers.
    pub fn pdu_signer(&self) -> impl Fn(Value) -> Value + Send + Sync + 'static {
        let identity = Identity::from_seed(&self.seed).expect("identity");
        move |pdu| sign_with(&identity, DEFAULT_ROOM_VERSION, pdu).1
    }

    /// The federation requests the node has sent to this server so far.
    pub fn received(&self) -> Vec<InboundRequest> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits (bounded by [`WAIT`]) until the node has sent a request that `matches`; returns it.
    pub async fn wait_for_request(
        &self,
        what: &str,
        matches: impl Fn(&InboundRequest) -> bool,
    ) -> InboundRequest {
        let mut arrivals = self.arrivals.clone();
        let wait = async {
            loop {
                arrivals.mark_unchanged();
                if let Some(r) = self.received().into_iter().find(|r| matches(r)) {
                    return r;
                }
                arrivals
                    .changed()
                    .await
                    .expect("the evil peer's server stopped");
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("the node sent no {what} within {WAIT:?}"))
    }

    /// Waits (bounded by [`WAIT`]) until the node has sent `n` requests that `matches`.
    pub async fn wait_for_requests(
        &self,
        what: &str,
        n: usize,
        matches: impl Fn(&InboundRequest) -> bool,
    ) {
        let mut arrivals = self.arrivals.clone();
        let wait = async {
            loop {
                arrivals.mark_unchanged();
                if self.received().iter().filter(|r| matches(r)).count() >= n {
                    return;
                }
                arrivals
                    .changed()
                    .await
                    .expect("the evil peer's server stopped");
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("the node sent fewer than {n} {what} within {WAIT:?}"))
    }

    /// Answers the node's `method` requests whose path starts with `path_prefix` with what
    /// `answer` returns (the latest script that matches wins).
    pub fn answer(
        &self,
        method: &str,
        path_prefix: &str,
        answer: impl Fn(&InboundRequest) -> (StatusCode, Value) + Send + Sync + 'static,
    ) {
        self.script.lock().expect("lock").push((
            method.to_owned(),
            path_prefix.to_owned(),
            Box::new(answer),
        ));
    }

    /// The `Authorization` header this server would send for a request.
    pub fn authorization(&self, method: &Method, path: &str, body: Option<&Value>) -> String {
        sign_request(&self.identity, method.as_str(), path, &self.target, body)
            .expect("sign the request")
    }

    /// A new federation stream to the node, to write raw bytes on (or none at all).
    pub async fn open_stream(&self) -> libp2p::Stream {
        tokio::time::timeout(WAIT, self.try_open_stream())
            .await
            .expect("opening a stream timed out")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`EvilPeer::open_stream`], handing back what went wrong (for benchmarks).
    pub async fn try_open_stream(&self) -> Result<libp2p::Stream, String> {
        let mut control = self.control.clone();
        control
            .open_stream(self.target_peer, FEDERATION_PROTOCOL)
            .await
            .map_err(|e| format!("stream to the node: {e}"))
    }

    /// Sends a request whose body is `body` as given (any bytes, JSON or not), with the given
    /// `Authorization` header (or none).
    pub async fn request_bytes(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let exchange = async {
            let stream = self.open_stream().await;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream.compat()))
                    .await
                    .expect("HTTP handshake");
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut req = hyper::Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, self.target.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(auth) = authorization {
                req = req.header(hyper::header::AUTHORIZATION, auth);
            }
            let req = req.body(Full::new(Bytes::from(body))).expect("request");
            let resp = sender.send_request(req).await.expect("send the request");
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .expect("read the response")
                .to_bytes();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path} took longer than {WAIT:?}"))
    }

    /// Waits (bounded by [`WAIT`]) until no connection to the node is open; false if one
    /// still is by then.
    pub async fn wait_disconnected(&self) -> bool {
        let mut link = self.link.clone();
        matches!(
            tokio::time::timeout(WAIT, link.wait_for(|up| !*up)).await,
            Ok(Ok(_))
        )
    }
}

/// A fresh key seed.
fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("random seed");
    seed
}

/// Adds the content hash and `identity`'s signature to `pdu`; returns the event id too.
fn sign_with(identity: &Identity, room_version: &str, pdu: Value) -> (String, Value) {
    let (_, rules) = version_rules(room_version).expect("a supported room version");
    let mut obj: CanonicalJsonObject =
        serde_json::from_value(pdu).expect("a PDU is a JSON object of canonical values");
    hash_and_sign_event(
        identity.server_name().as_str(),
        identity.key_pair(),
        &mut obj,
        &rules.redaction,
    )
    .expect("hash and sign the PDU");
    let hash = reference_hash(&obj, &rules).expect("reference hash");
    (format!("${hash}"), serde_json::to_value(obj).expect("JSON"))
}

/// Runs the swarm; reports the first connection to (or failed dial of) `target`.
async fn drive(
    mut swarm: Swarm<libp2p_stream::Behaviour>,
    target: PeerId,
    connected: oneshot::Sender<Result<(), String>>,
    link: watch::Sender<bool>,
) {
    let mut connected = Some(connected);
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target => {
                link.send_replace(true);
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if peer_id == target => {
                link.send_replace(false);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if peer == target => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Err(error.to_string()));
                }
            }
            _ => {}
        }
    }
}

/// Answers the federation requests the node sends, recording each.
async fn serve(
    mut incoming: libp2p_stream::IncomingStreams,
    received: Arc<Mutex<Vec<InboundRequest>>>,
    script: Script,
    arrived: watch::Sender<u64>,
) {
    let arrived = Arc::new(arrived);
    while let Some((_, stream)) = incoming.next().await {
        let (received, script, arrived) = (received.clone(), script.clone(), arrived.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let (received, script, arrived) =
                    (received.clone(), script.clone(), arrived.clone());
                async move {
                    let method = req.method().as_str().to_owned();
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default();
                    let body = match Limited::new(req.into_body(), MAX_INBOUND_BYTES)
                        .collect()
                        .await
                    {
                        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    let request = InboundRequest { method, path, body };
                    let scripted = script
                        .lock()
                        .expect("lock")
                        .iter()
                        .rev()
                        .find(|(m, prefix, _)| {
                            *m == request.method && request.path.starts_with(prefix.as_str())
                        })
                        .map(|(_, _, answer)| answer(&request));
                    let InboundRequest { method, path, body } = request;
                    let (status, answer) = if let Some(scripted) = scripted {
                        scripted
                    } else if method == "PUT" && path.starts_with("/_matrix/federation/v1/send/") {
                        (StatusCode::OK, json!({ "pdus": {} }))
                    } else {
                        (
                            StatusCode::NOT_FOUND,
                            json!({ "errcode": "M_UNRECOGNIZED", "error": "Not served here" }),
                        )
                    };
                    {
                        let mut log = received.lock().expect("lock");
                        if log.len() >= MAX_RECORDED {
                            log.remove(0);
                        }
                        log.push(InboundRequest { method, path, body });
                    }
                    arrived.send_modify(|n| *n += 1);
                    let resp = hyper::Response::builder()
                        .status(status)
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(answer.to_string())))
                        .expect("response");
                    Ok::<_, Infallible>(resp)
                }
            });
            let io = TokioIo::new(stream.compat());
            let _ = tokio::time::timeout(
                WAIT * 3,
                hyper::server::conn::http1::Builder::new().serve_connection(io, service),
            )
            .await;
        });
    }
}
