//! Federation HTTP over libp2p streams: each request opens a `/neurite/federation/1` stream to
//! the destination's peer id and speaks HTTP/1.1 on it, served by the same axum/hyper stack as
//! the client API.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Method, Request, StatusCode, header},
};
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use libp2p::PeerId;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tower::ServiceExt;

use super::auth::sign_request;
use crate::{
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

/// Accepts federation streams and serves each with `router`, until the swarm stops.
pub fn serve(p2p: &P2p, router: Router) -> Result<()> {
    let mut incoming = p2p
        .control()
        .accept(FEDERATION_PROTOCOL)
        .map_err(|e| Error::Network(e.to_string()))?;
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let router = router.clone();
            tokio::spawn(async move {
                let io = TokioIo::new(stream.compat());
                let service =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(AuthenticatedPeer(peer));
                        router.clone().oneshot(req.map(Body::new))
                    });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "federation stream ended with an error");
                }
            });
        }
    });
    Ok(())
}

/// A federation response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body (`Null` if empty or not JSON).
    pub body: serde_json::Value,
}

/// How often a request whose stream was dropped unanswered is sent again.
const UNANSWERED_RETRIES: u32 = 2;
/// Pause before sending it again (times the attempt number).
const UNANSWERED_PAUSE: Duration = Duration::from_millis(100);

/// Why one attempt at a request failed.
enum Failure {
    /// The stream closed before any answer: safe and useful to send again.
    Unanswered(String),
    /// Anything else.
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
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

    /// [`Self::request`], given up after `limit` (fetches that other work waits on use a
    /// shorter one: a peer that is connected but frozen, like a suspended app, never answers).
    ///
    /// A request whose stream was dropped before any answer came (the peer's accept queue
    /// was full, or the connection died under it) is sent again, twice at most: federation
    /// requests are reads, or writes that the receiver deduplicates (transaction ids, event
    /// ids).
    pub async fn request_within(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        limit: Duration,
    ) -> Result<Response> {
        let attempts = async {
            let mut attempt = 0u32;
            loop {
                match self
                    .request_inner(destination, method.clone(), path, body.as_ref())
                    .await
                {
                    Err(Failure::Unanswered(e)) if attempt < UNANSWERED_RETRIES => {
                        attempt += 1;
                        tracing::debug!(%destination, %path, error = %e, attempt, "no answer; sending again");
                        tokio::time::sleep(UNANSWERED_PAUSE * attempt).await;
                    }
                    Err(Failure::Unanswered(e)) => return Err(Error::Network(e)),
                    Err(Failure::Other(e)) => return Err(e),
                    Ok(resp) => return Ok(resp),
                }
            }
        };
        tokio::time::timeout(limit, attempts)
            .await
            .map_err(|_| Error::Network(format!("request to {destination} timed out")))?
    }

    async fn request_inner(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> std::result::Result<Response, Failure> {
        let peer = peer_id_for_server_name(destination)
            .ok_or_else(|| Error::Network(format!("{destination} is not a Neurite server name")))?;
        let auth = sign_request(&self.identity, method.as_str(), path, destination, body)
            .ok_or_else(|| Error::Network("could not sign the request".into()))?;
        let stream = match self
            .p2p
            .control()
            .open_stream(peer, FEDERATION_PROTOCOL)
            .await
        {
            Ok(stream) => stream,
            // Not connected and no address the swarm knows: dial what the address book and
            // the peers we are connected to know, then try once more.
            Err(first) => {
                if !self.p2p.reach(peer).await {
                    return Err(Error::Network(format!("stream to {destination}: {first}")).into());
                }
                self.p2p
                    .control()
                    .open_stream(peer, FEDERATION_PROTOCOL)
                    .await
                    .map_err(|e| Error::Network(format!("stream to {destination}: {e}")))?
            }
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream.compat()))
                .await
                .map_err(|e| Error::Network(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(Error::from)?,
            None => Vec::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, destination)
            .header(header::AUTHORIZATION, auth);
        if body.is_some() {
            req = req.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let req = req
            .body(Full::new(axum::body::Bytes::from(bytes)))
            .map_err(|e| Error::Network(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| {
            // Closed before the response began: the request was not (fully) handled.
            if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
                Failure::Unanswered(e.to_string())
            } else {
                Failure::Other(Error::Network(e.to_string()))
            }
        })?;
        let status = resp.status();
        let collected = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Error::Network(format!("reading response from {destination}: {e}")))?
            .to_bytes();
        let body = serde_json::from_slice(&collected).unwrap_or(serde_json::Value::Null);
        Ok(Response { status, body })
    }
}
