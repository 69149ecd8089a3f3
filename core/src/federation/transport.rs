//! Federation HTTP over libp2p streams: each request opens a `/neurite/federation/1` stream to
//! the destination's peer id and speaks HTTP/1.1 on it, served by the same axum/hyper stack as
//! the client API.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Method, Request, StatusCode, header},
};
use futures::{AsyncReadExt, AsyncWriteExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use libp2p::PeerId;
use tokio::sync::Semaphore;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tower::ServiceExt;

use super::{auth::sign_request, bounded};
use crate::{
    config::FederationLimits,
    error::{Error, Result},
    identity::{Identity, peer_id_for_server_name},
    p2p::{FEDERATION_PROTOCOL, P2p},
};

/// The Noise-authenticated peer a federation request arrived from (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct AuthenticatedPeer(pub PeerId);

/// Largest federation response body read.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Longest a federation request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of a request's line and headers held for one stream.
const MAX_HEAD_BUFFER: usize = 32 * 1024;
/// How long a refused stream is given to take its answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a refused request read (and dropped) while the answer goes out.
const REFUSAL_DRAIN_BYTES: u64 = 64 * 1024;
/// The unit of [`BodyBudget`]'s semaphore.
const BUDGET_UNIT: usize = 1024;

/// Room for request bodies in memory, shared by every federation stream (a request
/// extension): a request takes its share before its body is read and gives it back when
/// the handler is done with the body.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: u32,
}

impl BodyBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        Self {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Waits for room for a body of up to `bytes` (a body larger than the whole budget takes
    /// all of it).
    pub async fn reserve(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        self.units.clone().acquire_many_owned(units).await.ok()
    }
}

/// Counts the federation requests being served, per peer and in total.
struct Gate {
    in_flight: Mutex<HashMap<PeerId, usize>>,
    per_peer: usize,
    total: usize,
}

/// A place in the [`Gate`], given back when dropped.
struct Pass {
    gate: Arc<Gate>,
    peer: PeerId,
}

impl Gate {
    fn enter(self: &Arc<Self>, peer: PeerId) -> Option<Pass> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = in_flight.values().sum();
        let mine = in_flight.get(&peer).copied().unwrap_or(0);
        if mine >= self.per_peer {
            return None;
        }
        // Past the total, a peer still gets its fair share: keys are free, so many peers
        // holding their places must not shut out one that holds none. This lets the total
        // go over by at most one request per connected peer.
        if total >= self.total {
            let peers = in_flight.len() + usize::from(mine == 0);
            if mine >= (self.total / peers.max(1)).max(1) {
                return None;
            }
        }
        in_flight.insert(peer, mine + 1);
        Some(Pass {
            gate: self.clone(),
            peer,
        })
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut in_flight = self
            .gate
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.peer);
            }
        }
    }
}

/// Accepts federation streams and serves each with `router`, until the node stops (the
/// accept loop and every stream it serves are among the node's tasks).
///
/// Streams arrive through a queue of their own ([`crate::p2p::inbound`]), not libp2p-stream's
/// one-stream channel, so a burst of them is not dropped while the loop catches up. The
/// accept loop only counts and spawns, so a slow stream never holds up the next one. A
/// peer with as many requests in progress as `limits` allow it gets `429 M_LIMIT_EXCEEDED`
/// at once for the next, and so does one holding more than its fair share once all peers
/// together hold the total; each stream has a deadline for its request head and one for the
/// whole exchange.
pub fn serve(p2p: &P2p, router: Router, limits: &FederationLimits) -> Result<()> {
    let mut incoming = p2p
        .take_federation_streams()
        .ok_or_else(|| Error::Network("federation streams are served already".into()))?;
    let gate = Arc::new(Gate {
        in_flight: Mutex::new(HashMap::new()),
        per_peer: limits.max_requests_per_peer.max(1),
        total: limits.max_requests.max(1),
    });
    let budget = BodyBudget::new(limits.max_body_bytes_in_flight);
    let (header_timeout, request_timeout) = (limits.header_read_timeout, limits.request_timeout);
    let tasks = p2p.tasks().clone();
    p2p.tasks().spawn(async move {
        while let Some((peer, stream)) = incoming.recv().await {
            let Some(pass) = gate.enter(peer) else {
                tracing::debug!(%peer, "federation request refused: too many in progress");
                tasks.spawn(refuse(stream));
                continue;
            };
            let (router, budget) = (router.clone(), budget.clone());
            tasks.spawn(async move {
                let _pass = pass;
                let io = TokioIo::new(stream.compat());
                let service =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(AuthenticatedPeer(peer));
                        req.extensions_mut().insert(budget.clone());
                        router.clone().oneshot(req.map(Body::new))
                    });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(MAX_HEAD_BUFFER)
                    // One request per stream: streams are cheap, and a stream left open after
                    // its answer would hold a place in the gate.
                    .keep_alive(false)
                    .serve_connection(io, service);
                match tokio::time::timeout(request_timeout, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "federation stream ended with an error")
                    }
                    Err(_) => tracing::debug!(%peer, "federation stream took too long; closed"),
                }
            });
        }
    });
    Ok(())
}

/// Answers a stream over the limits with `429 M_LIMIT_EXCEEDED` as soon as its request head
/// is in (an HTTP client takes no answer before it has sent its request), within
/// [`REFUSAL_TIMEOUT`] and without parsing anything.
async fn refuse(mut stream: libp2p::Stream) {
    let body = r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests in progress","retry_after_ms":1000}"#;
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BUFFER {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream.write_all(answer.as_bytes()).await?;
        stream.close().await?;
        // Whatever the peer had sent is read and dropped, so its side sees the answer
        // rather than a reset.
        let mut sink = futures::io::sink();
        futures::io::copy((&mut stream).take(REFUSAL_DRAIN_BYTES), &mut sink).await?;
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, exchange).await;
}

/// A federation response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body (`Null` if empty or not JSON).
    pub body: serde_json::Value,
}

/// Sends signed federation requests to other Neurite nodes.
#[derive(Clone)]
pub struct FederationClient {
    identity: Arc<Identity>,
    p2p: P2p,
}

impl FederationClient {
    /// Creates the client.
    pub fn new(identity: Arc<Identity>, p2p: P2p) -> Self {
        Self { identity, p2p }
    }

    /// Sends a request to `destination` (a server name); `path` includes the query string.
    /// An answer with more values than [`bounded::MAX_RESPONSE_VALUES`] is read as `Null`.
    pub async fn request(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Response> {
        self.request_within(destination, method, path, body, REQUEST_TIMEOUT)
            .await
    }

    /// [`Self::request`], given up after `limit`.
    pub async fn request_within(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        limit: Duration,
    ) -> Result<Response> {
        let (status, bytes) = self
            .exchange(destination, method, path, body, limit)
            .await?;
        let body =
            match bounded::check_shape(&bytes, bounded::MAX_RESPONSE_VALUES, bounded::MAX_DEPTH) {
                Ok(()) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                Err(e) => {
                    tracing::debug!(%destination, %path, error = %e, "answer refused");
                    serde_json::Value::Null
                }
            };
        Ok(Response { status, body })
    }

    /// Like [`FederationClient::request`] for answers made of lists of events: only the arrays
    /// named in `fields` are read, each cut to its given length while it is parsed (what a
    /// server sends beyond what was asked for is skipped, never built).
    pub async fn request_lists(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        fields: &[(&str, usize)],
    ) -> Result<(StatusCode, Vec<Vec<serde_json::Value>>)> {
        self.request_lists_within(destination, method, path, body, fields, REQUEST_TIMEOUT)
            .await
    }

    /// [`Self::request_lists`], given up after `limit`: fetches that other work waits on use
    /// a shorter one, as a peer that is connected but frozen (a suspended app) never answers.
    pub async fn request_lists_within(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        fields: &[(&str, usize)],
        limit: Duration,
    ) -> Result<(StatusCode, Vec<Vec<serde_json::Value>>)> {
        let (status, bytes) = self
            .exchange(destination, method, path, body, limit)
            .await?;
        let lists = bounded::capped_arrays(&bytes, fields).unwrap_or_else(|e| {
            tracing::debug!(%destination, %path, error = %e, "answer is not a JSON object");
            vec![Vec::new(); fields.len()]
        });
        Ok((status, lists))
    }

    /// One request and its answer's status and bytes, within `limit`.
    async fn exchange(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        limit: Duration,
    ) -> Result<(StatusCode, axum::body::Bytes)> {
        tokio::time::timeout(limit, self.request_inner(destination, method, path, body))
            .await
            .map_err(|_| Error::Network(format!("request to {destination} timed out")))?
    }

    async fn request_inner(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, axum::body::Bytes)> {
        let peer = peer_id_for_server_name(destination)
            .ok_or_else(|| Error::Network(format!("{destination} is not a Neurite server name")))?;
        let auth = sign_request(
            &self.identity,
            method.as_str(),
            path,
            destination,
            body.as_ref(),
        )
        .ok_or_else(|| Error::Network("could not sign the request".into()))?;
        let bytes = match &body {
            Some(b) => axum::body::Bytes::from(serde_json::to_vec(b)?),
            None => axum::body::Bytes::new(),
        };
        let mut last = None;
        // A stream the other side dropped before answering anything is tried once more on a
        // new stream: a busy node can drop a new stream before it is served (its queue of
        // new streams is full, or it runs an older version whose queue held one stream).
        // Federation requests are idempotent.
        for _ in 0..2 {
            match self
                .attempt(
                    peer,
                    destination,
                    &method,
                    path,
                    &auth,
                    body.is_some(),
                    &bytes,
                )
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Dropped(e)) => {
                    tracing::debug!(%destination, %path, error = %e, "stream dropped unanswered");
                    last = Some(e);
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        Err(Error::Network(format!(
            "{destination} dropped the request: {}",
            last.unwrap_or_default()
        )))
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        peer: PeerId,
        destination: &str,
        method: &Method,
        path: &str,
        auth: &str,
        has_body: bool,
        bytes: &axum::body::Bytes,
    ) -> std::result::Result<(StatusCode, axum::body::Bytes), Attempt> {
        // Not connected: dial what the address book and the peers we are connected to know
        // first. (Opening a stream to a peer that is not connected would dial it at whatever
        // addresses the swarm's behaviours hold, which the address book has not checked.)
        if !self.p2p.is_connected(&peer) && !self.p2p.reach(peer).await {
            return Err(Attempt::Failed(Error::Network(format!(
                "{destination} is not reachable"
            ))));
        }
        let stream = self
            .p2p
            .control()
            .open_stream(peer, FEDERATION_PROTOCOL)
            .await
            .map_err(|e| {
                Attempt::Failed(Error::Network(format!("stream to {destination}: {e}")))
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream.compat()))
                .await
                .map_err(|e| Attempt::Failed(Error::Network(e.to_string())))?;
        self.p2p.tasks().spawn(async move {
            let _ = connection.await;
        });
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, destination)
            .header(header::AUTHORIZATION, auth);
        if has_body {
            req = req.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let req = req
            .body(Full::new(bytes.clone()))
            .map_err(|e| Attempt::Failed(Error::Network(e.to_string())))?;
        let resp = sender.send_request(req).await.map_err(|e| {
            if e.is_incomplete_message() || e.is_closed() || e.is_canceled() || was_reset(&e) {
                Attempt::Dropped(e.to_string())
            } else {
                Attempt::Failed(Error::Network(e.to_string()))
            }
        })?;
        let status = resp.status();
        let collected = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                Attempt::Failed(Error::Network(format!(
                    "reading response from {destination}: {e}"
                )))
            })?
            .to_bytes();
        Ok((status, collected))
    }
}

/// How one try at a request ended, when it did not end with an answer.
enum Attempt {
    /// The stream closed before any answer: worth one more try.
    Dropped(String),
    /// Anything else.
    Failed(Error),
}

/// Whether an error comes from the stream being reset or closed under it.
fn was_reset(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        cause = err.source();
    }
    false
}
