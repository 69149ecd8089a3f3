//! Sending and reading room events: send, state, redact, event, messages, context,
//! relations, typing, receipts and read markers.

use std::time::Duration;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiResult, AppState, Auth, Json, OptionalJson, Path, Query};
use crate::{
    error::MatrixError,
    filter::RoomEventFilter,
    rooms::{
        EventTemplate, TxnId,
        relations::{RelationsQuery, ThreadsInclude, ThreadsQuery},
        timeline::{Direction, MessagesQuery},
    },
};

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`.
pub(super) async fn send(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, ty, txn)): Path<(String, String, String)>,
    Json(content): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let tpl = EventTemplate::message(&ty, Value::Object(content));
    let txn = TxnId {
        device_id: session.device_id.clone(),
        txn_id: txn,
    };
    let event_id = state
        .rooms
        .send(&session.user_id, &room, tpl, Some(txn))
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// `GET /rooms/{roomId}/state`.
pub(super) async fn all_state(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Array(
        state
            .rooms
            .full_state(session.user_id.as_str(), &room)
            .await?,
    )))
}

#[derive(Deserialize)]
pub(super) struct StateQuery {
    format: Option<String>,
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub(super) async fn get_state(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, ty, key)): Path<(String, String, String)>,
    Query(q): Query<StateQuery>,
) -> ApiResult<Json<Value>> {
    if q.format.as_deref() == Some("event") {
        let all = state
            .rooms
            .full_state(session.user_id.as_str(), &room)
            .await?;
        return all
            .into_iter()
            .find(|e| e["type"] == json!(ty) && e["state_key"] == json!(key))
            .map(Json)
            .ok_or_else(|| MatrixError::not_found("State event not found"));
    }
    Ok(Json(
        state
            .rooms
            .state_event_for(session.user_id.as_str(), &room, &ty, &key)
            .await?,
    ))
}

/// `GET /rooms/{roomId}/state/{eventType}` (empty state key).
pub(super) async fn get_state_empty_key(
    state: State<AppState>,
    auth: Auth,
    Path((room, ty)): Path<(String, String)>,
    q: Query<StateQuery>,
) -> ApiResult<Json<Value>> {
    get_state(state, auth, Path((room, ty, String::new())), q).await
}

/// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub(super) async fn put_state(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, ty, key)): Path<(String, String, String)>,
    Json(content): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    if ty == "m.room.create" {
        return Err(MatrixError::forbidden(
            "The create event cannot be replaced",
        ));
    }
    crate::validate::state_content(&ty, &content)?;
    let tpl = EventTemplate::state(&ty, &key, Value::Object(content));
    let event_id = state.rooms.send(&session.user_id, &room, tpl, None).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// `PUT /rooms/{roomId}/state/{eventType}` (empty state key).
pub(super) async fn put_state_empty_key(
    state: State<AppState>,
    auth: Auth,
    Path((room, ty)): Path<(String, String)>,
    body: Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    put_state(state, auth, Path((room, ty, String::new())), body).await
}

#[derive(Deserialize, Default)]
pub(super) struct RedactBody {
    reason: Option<String>,
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
pub(super) async fn redact(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, event, txn)): Path<(String, String, String)>,
    Json(body): Json<RedactBody>,
) -> ApiResult<Json<Value>> {
    let mut content = Map::new();
    if let Some(reason) = body.reason {
        content.insert("reason".into(), json!(reason));
    }
    let tpl = EventTemplate {
        event_type: "m.room.redaction".into(),
        state_key: None,
        content: Value::Object(content),
        redacts: Some(event),
    };
    let txn = TxnId {
        device_id: session.device_id.clone(),
        txn_id: txn,
    };
    let event_id = state
        .rooms
        .send(&session.user_id, &room, tpl, Some(txn))
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// `GET /rooms/{roomId}/event/{eventId}`.
pub(super) async fn get_event(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, event)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .rooms
            .event(session.user_id.as_str(), &session.device_id, &room, &event)
            .await?,
    ))
}

fn parse_filter(filter: Option<&str>) -> ApiResult<RoomEventFilter> {
    match filter {
        None | Some("") => Ok(RoomEventFilter::default()),
        Some(f) => serde_json::from_str(f)
            .map_err(|e| MatrixError::invalid_param(format!("Invalid filter: {e}"))),
    }
}

fn parse_dir(dir: Option<&str>) -> ApiResult<Direction> {
    match dir {
        Some("b") | None => Ok(Direction::Backward),
        Some("f") => Ok(Direction::Forward),
        Some(_) => Err(MatrixError::invalid_param("dir must be b or f")),
    }
}

#[derive(Deserialize)]
pub(super) struct MessagesParams {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<String>,
    filter: Option<String>,
}

fn parse_limit(limit: Option<&str>, default: usize, max: usize) -> ApiResult<usize> {
    crate::validate::limit_param(limit, default, max)
}

/// `GET /rooms/{roomId}/messages`.
pub(super) async fn messages(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Query(q): Query<MessagesParams>,
) -> ApiResult<Json<Value>> {
    let filter = parse_filter(q.filter.as_deref())?;
    let limit = parse_limit(
        q.limit.as_deref(),
        filter.limit.map_or(10, |l| l as usize),
        1000,
    )?;
    let query = MessagesQuery {
        from: q.from,
        to: q.to,
        dir: parse_dir(q.dir.as_deref())?,
        limit,
        filter,
    };
    Ok(Json(
        state
            .rooms
            .messages(session.user_id.as_str(), &session.device_id, &room, query)
            .await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct ContextParams {
    limit: Option<String>,
    filter: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct TimestampParams {
    ts: Option<String>,
    dir: Option<String>,
}

/// `GET /v1/rooms/{roomId}/timestamp_to_event`.
pub(super) async fn timestamp_to_event(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Query(q): Query<TimestampParams>,
) -> ApiResult<Json<Value>> {
    let ts =
        q.ts.ok_or_else(|| MatrixError::missing_param("ts is required"))?
            .parse::<i64>()
            .map_err(|_| MatrixError::invalid_param("ts must be an integer (milliseconds)"))?;
    let dir = match q.dir.as_deref() {
        Some("f") => Direction::Forward,
        Some("b") => Direction::Backward,
        Some(_) => return Err(MatrixError::invalid_param("dir must be f or b")),
        None => return Err(MatrixError::missing_param("dir is required")),
    };
    let (event_id, origin_server_ts) = state
        .rooms
        .timestamp_to_event(session.user_id.as_str(), &room, ts, dir)
        .await?;
    Ok(Json(
        json!({ "event_id": event_id, "origin_server_ts": origin_server_ts }),
    ))
}

/// `GET /rooms/{roomId}/context/{eventId}`.
pub(super) async fn context(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, event)): Path<(String, String)>,
    Query(q): Query<ContextParams>,
) -> ApiResult<Json<Value>> {
    let filter = parse_filter(q.filter.as_deref())?;
    let limit = parse_limit(q.limit.as_deref(), 10, 100)?;
    Ok(Json(
        state
            .rooms
            .context(
                session.user_id.as_str(),
                &session.device_id,
                &room,
                &event,
                limit,
                filter,
            )
            .await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct RelationsParams {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<String>,
    recurse: Option<String>,
    /// MSC3981's name for `recurse` before v1.10, still used by matrix-js-sdk.
    #[serde(rename = "org.matrix.msc3981.recurse")]
    recurse_unstable: Option<String>,
}

fn parse_bool(value: Option<&str>, name: &str) -> ApiResult<Option<bool>> {
    match value {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(MatrixError::invalid_param(format!(
            "{name} must be true or false"
        ))),
    }
}

async fn relations_inner(
    state: AppState,
    session: crate::accounts::Session,
    room: String,
    event: String,
    rel_type: Option<String>,
    event_type: Option<String>,
    q: RelationsParams,
) -> ApiResult<Json<Value>> {
    let query = RelationsQuery {
        rel_type,
        event_type,
        from: q.from,
        to: q.to,
        dir: parse_dir(q.dir.as_deref())?,
        limit: parse_limit(q.limit.as_deref(), 50, 500)?,
        recurse: parse_bool(q.recurse.or(q.recurse_unstable).as_deref(), "recurse")?,
    };
    Ok(Json(
        state
            .rooms
            .relations(
                session.user_id.as_str(),
                &session.device_id,
                &room,
                &event,
                query,
            )
            .await?,
    ))
}

/// `GET /rooms/{roomId}/relations/{eventId}`.
pub(super) async fn relations(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, event)): Path<(String, String)>,
    Query(q): Query<RelationsParams>,
) -> ApiResult<Json<Value>> {
    relations_inner(state, session, room, event, None, None, q).await
}

/// `GET /rooms/{roomId}/relations/{eventId}/{relType}`.
pub(super) async fn relations_by_type(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, event, rel)): Path<(String, String, String)>,
    Query(q): Query<RelationsParams>,
) -> ApiResult<Json<Value>> {
    relations_inner(state, session, room, event, Some(rel), None, q).await
}

/// `GET /rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`.
pub(super) async fn relations_by_type_and_event(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, event, rel, ty)): Path<(String, String, String, String)>,
    Query(q): Query<RelationsParams>,
) -> ApiResult<Json<Value>> {
    relations_inner(state, session, room, event, Some(rel), Some(ty), q).await
}

#[derive(Deserialize)]
pub(super) struct ThreadsParams {
    include: Option<String>,
    limit: Option<String>,
    from: Option<String>,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`.
pub(super) async fn threads(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Query(q): Query<ThreadsParams>,
) -> ApiResult<Json<Value>> {
    let include = match q.include.as_deref() {
        None | Some("all") => ThreadsInclude::All,
        Some("participated") => ThreadsInclude::Participated,
        Some(_) => {
            return Err(MatrixError::invalid_param(
                "include must be all or participated",
            ));
        }
    };
    let limit = match q.limit.as_deref() {
        None => 10,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => n.min(100) as usize,
            _ => {
                return Err(MatrixError::invalid_param(
                    "limit must be a positive integer",
                ));
            }
        },
    };
    let query = ThreadsQuery {
        include,
        limit,
        from: q.from,
    };
    Ok(Json(
        state
            .rooms
            .threads(session.user_id.as_str(), &session.device_id, &room, query)
            .await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// `PUT /rooms/{roomId}/typing/{userId}`.
pub(super) async fn typing(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, user)): Path<(String, String)>,
    Json(body): Json<TypingBody>,
) -> ApiResult<Json<Value>> {
    if user != session.user_id.as_str() {
        return Err(MatrixError::forbidden(
            "You may only set your own typing state",
        ));
    }
    let timeout = Duration::from_millis(body.timeout.unwrap_or(30_000));
    state
        .federated()
        .set_typing(&room, &user, body.typing, timeout)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
pub(super) struct ReceiptBody {
    thread_id: Option<String>,
}

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
pub(super) async fn receipt(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, ty, event)): Path<(String, String, String)>,
    OptionalJson(body): OptionalJson<ReceiptBody>,
) -> ApiResult<Json<Value>> {
    match ty.as_str() {
        "m.read" | "m.read.private" | "m.fully_read" => {}
        _ => return Err(MatrixError::invalid_param("Unknown receipt type")),
    }
    state
        .federated()
        .set_read_marker(
            session.user_id.as_str(),
            &room,
            &ty,
            &event,
            body.thread_id.as_deref(),
        )
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// `POST /rooms/{roomId}/read_markers`.
pub(super) async fn read_markers(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Json(body): Json<ReadMarkersBody>,
) -> ApiResult<Json<Value>> {
    for (ty, event) in [
        ("m.fully_read", body.fully_read),
        ("m.read", body.read),
        ("m.read.private", body.read_private),
    ] {
        if let Some(event) = event {
            state
                .federated()
                .set_read_marker(session.user_id.as_str(), &room, ty, &event, None)
                .await?;
        }
    }
    Ok(Json(json!({})))
}
