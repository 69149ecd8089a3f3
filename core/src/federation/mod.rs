//! The server-server API, carried over libp2p streams (see [`transport`]).
//!
//! Handlers here follow the client API's pattern: an extractor checks the request (signature,
//! destination, origin = authenticated peer), the handler calls one service and answers.

pub mod auth;
pub mod bounded;
pub mod catchup;
pub mod devices;
pub mod edus;
pub mod inbound;
pub mod membership;
pub mod outbox;
pub mod own_membership;
pub mod query;
pub mod rooms;
pub mod state;
pub mod transport;

use axum::{
    Json, Router,
    extract::{FromRequest, Request, State},
    http::StatusCode,
    routing::{get, post, put},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    client::{AppState, Query},
    error::{ErrorCode, MatrixError},
    identity::{KEY_ID, peer_id_for_server_name},
};
use transport::AuthenticatedPeer;

/// Largest federation request body accepted.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// A verified federation request: its origin server and its JSON body.
pub struct Signed<T> {
    /// The server that signed the request (and is the peer on the other end).
    pub origin: String,
    /// The body.
    pub body: T,
    /// The body's share of the memory budget, held while the handler runs.
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn unauthorized(failure: auth::AuthFailure) -> MatrixError {
    MatrixError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        format!("Request signature refused: {failure:?}"),
    )
}

fn too_large() -> MatrixError {
    MatrixError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        "Request body too large",
    )
}

/// Reads a request body of at most [`MAX_REQUEST_BYTES`] into one buffer sized for what it
/// declared (`expected`), so a large body is held once, not once more while its buffer grows.
async fn read_body(body: axum::body::Body, expected: usize) -> Result<Vec<u8>, MatrixError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut bytes = Vec::with_capacity(expected);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| MatrixError::bad_json("The request body was cut off"))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_REQUEST_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// The order of checks keeps what a peer can make the node spend small: the header
/// (destination, key, origin = the peer on the other end) before the body is read; room in the
/// shared body budget before it is read; its shape (value count, depth) before it is parsed;
/// the signature over the bytes as received; and only then one parse into `T`.
impl<T: DeserializeOwned> FromRequest<AppState> for Signed<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = req
            .extensions()
            .get::<AuthenticatedPeer>()
            .copied()
            .ok_or_else(|| {
                MatrixError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "Not a peer-to-peer request",
                )
            })?;
        let local = state.identity.server_name().as_str();
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let x = auth::check_header(header, local).map_err(unauthorized)?;
        if peer_id_for_server_name(&x.origin) != Some(peer.0) {
            return Err(MatrixError::forbidden(
                "The request's origin is not the peer that sent it",
            ));
        }
        // What the body will take: its declared length, the most allowed for a chunked one,
        // nothing for none (a GET takes no share of the budget).
        let hint = http_body::Body::size_hint(req.body());
        if hint.lower() > MAX_REQUEST_BYTES as u64 {
            return Err(too_large());
        }
        let expected = hint
            .upper()
            .map_or(MAX_REQUEST_BYTES, |n| (n as usize).min(MAX_REQUEST_BYTES));
        let budget = match req.extensions().get::<transport::BodyBudget>() {
            Some(budget) if expected > 0 => budget.reserve(expected).await,
            _ => None,
        };
        let method = req.method().as_str().to_owned();
        let uri = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let bytes = read_body(req.into_body(), expected).await?;
        bounded::check_shape(&bytes, bounded::MAX_REQUEST_VALUES, bounded::MAX_DEPTH).map_err(
            |e| match e {
                bounded::ShapeError::TooManyValues => MatrixError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::TooLarge,
                    format!("Request body refused: {e}"),
                ),
                bounded::ShapeError::TooDeep => {
                    MatrixError::bad_json(format!("Request body refused: {e}"))
                }
            },
        )?;
        auth::verify_body(&x, local, &method, &uri, &bytes).map_err(unauthorized)?;
        state.heard.record(&x.origin);
        state.inbound.heard_from(&x.origin, true);
        let body = if bytes.is_empty() {
            serde_json::from_value(json!({}))
        } else {
            serde_json::from_slice(&bytes)
        }
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                MatrixError::not_json(e.to_string())
            }
            _ => MatrixError::bad_json(format!("Invalid request body: {e}")),
        })?;
        Ok(Signed {
            origin: x.origin,
            body,
            _budget: budget,
        })
    }
}

/// `GET /_matrix/federation/v1/version`.
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Neurite", "version": env!("CARGO_PKG_VERSION") } }))
}

/// `GET /_matrix/key/v2/server`: the node's one key, which its name already encodes.
async fn server_keys(State(state): State<AppState>) -> Result<Json<Value>, MatrixError> {
    let name = state.identity.server_name().as_str();
    let key = ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(
        state.identity.verifying_key().to_bytes(),
    );
    let valid_until = crate::storage::now_ms() + 7 * 24 * 3600 * 1000;
    let body = json!({
        "server_name": name,
        "valid_until_ts": valid_until,
        "verify_keys": { KEY_ID: { "key": key.encode() } },
        "old_verify_keys": {},
    });
    let mut obj: ruma::CanonicalJsonObject =
        serde_json::from_value(body).map_err(|_| MatrixError::internal())?;
    ruma::signatures::sign_json(name, state.identity.key_pair(), &mut obj)
        .map_err(|_| MatrixError::internal())?;
    Ok(Json(
        serde_json::to_value(obj).map_err(|_| MatrixError::internal())?,
    ))
}

#[derive(serde::Deserialize)]
struct ProfileQuery {
    user_id: String,
    field: Option<String>,
}

/// `GET /_matrix/federation/v1/query/profile`.
async fn query_profile(
    State(state): State<AppState>,
    Query(q): Query<ProfileQuery>,
    signed: Signed<Value>,
) -> Result<Json<Value>, MatrixError> {
    let _ = signed.origin;
    let (name, avatar) = state.user_data.profile(&q.user_id).await?;
    let mut body = serde_json::Map::new();
    if q.field.as_deref() != Some("avatar_url")
        && let Some(n) = name
    {
        body.insert("displayname".into(), json!(n));
    }
    if q.field.as_deref() != Some("displayname")
        && let Some(a) = avatar
    {
        body.insert("avatar_url".into(), json!(a));
    }
    Ok(Json(Value::Object(body)))
}

async fn unrecognized() -> MatrixError {
    MatrixError::unrecognized()
}

/// The server-server API router (served only on federation streams).
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/_matrix/federation/v1/version", get(version))
        .route("/_matrix/key/v2/server", get(server_keys))
        .route("/_matrix/federation/v1/query/profile", get(query_profile))
        .route(
            "/_matrix/federation/v1/make_join/{room}/{user}",
            get(rooms::make_join),
        )
        .route(
            "/_matrix/federation/v2/send_join/{room}/{event}",
            put(rooms::send_join),
        )
        .route(
            "/_matrix/federation/v2/invite/{room}/{event}",
            put(rooms::invite),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{room}/{user}",
            get(rooms::make_leave),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room}/{event}",
            put(rooms::send_leave),
        )
        .route(
            "/_matrix/federation/v1/send/{txn}",
            put(rooms::send_transaction),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{room}",
            post(rooms::get_missing_events),
        )
        .route(
            "/_matrix/federation/v1/event/{event}",
            get(rooms::get_event),
        )
        .route(
            "/_matrix/federation/v1/event_auth/{room}/{event}",
            get(rooms::event_auth),
        )
        .route(
            "/_matrix/federation/v1/query/directory",
            get(query::query_directory),
        )
        .route(
            "/_matrix/federation/v1/state/{room}",
            get(state::room_state),
        )
        .route(
            "/_matrix/federation/v1/state_ids/{room}",
            get(state::state_ids),
        )
        .route(
            "/_matrix/federation/v1/backfill/{room}",
            get(state::backfill),
        )
        .route(
            "/_matrix/federation/v1/user/devices/{user}",
            get(devices::user_devices),
        )
        .route(
            "/_matrix/federation/v1/user/keys/query",
            post(devices::user_keys_query),
        )
        .route(
            "/_matrix/federation/v1/user/keys/claim",
            post(devices::user_keys_claim),
        )
        .route(catchup::EXTREMITIES_PATH, get(catchup::extremities))
        .fallback(unrecognized)
        .with_state(state);
    catch_panics(router)
}

/// A panic in a handler is a bug: the peer gets `500 M_UNKNOWN` and the node goes on
/// serving (the stream's task would otherwise end without an answer).
fn catch_panics(router: Router) -> Router {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |_: Box<dyn std::any::Any + Send>| {
            tracing::error!("federation handler panicked");
            axum::response::IntoResponse::into_response(MatrixError::internal())
        },
    ))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_router_serves_on() {
        async fn boom() -> &'static str {
            panic!("a bug in a handler")
        }
        let router = catch_panics(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "fine" })),
        );
        let resp = router
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).expect("request"))
            .await
            .expect("an answer");
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
        let resp = router
            .oneshot(Request::get("/fine").body(Body::empty()).expect("request"))
            .await
            .expect("an answer");
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
