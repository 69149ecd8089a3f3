//! Server-side key backup: `/room_keys/version` and `/room_keys/keys`.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiResult, AppState, Auth, Json, Path, Query};
use crate::{
    e2ee::backup::{BackupKey, KeyScope},
    error::MatrixError,
};

#[derive(Deserialize)]
pub(super) struct VersionBody {
    algorithm: String,
    auth_data: Map<String, Value>,
    version: Option<String>,
}

/// `POST /room_keys/version`.
pub(super) async fn create_version(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<VersionBody>,
) -> ApiResult<Json<Value>> {
    let version = state
        .e2ee
        .create_backup_version(
            &session.user_id,
            &body.algorithm,
            &Value::Object(body.auth_data),
        )
        .await?;
    Ok(Json(json!({ "version": version })))
}

/// `GET /room_keys/version`: the latest version.
pub(super) async fn latest_version(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state.e2ee.backup_version(&session.user_id, None).await?,
    ))
}

/// `GET /room_keys/version/{version}`.
pub(super) async fn get_version(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(version): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .e2ee
            .backup_version(&session.user_id, Some(&version))
            .await?,
    ))
}

/// `PUT /room_keys/version/{version}`.
pub(super) async fn put_version(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(version): Path<String>,
    Json(body): Json<VersionBody>,
) -> ApiResult<Json<Value>> {
    if body.version.as_ref().is_some_and(|v| *v != version) {
        return Err(MatrixError::invalid_param(
            "The version in the body does not match the path",
        ));
    }
    state
        .e2ee
        .update_backup_version(
            &session.user_id,
            &version,
            &body.algorithm,
            &Value::Object(body.auth_data),
        )
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /room_keys/version/{version}`.
pub(super) async fn delete_version(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(version): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .e2ee
        .delete_backup_version(&session.user_id, &version)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct VersionQuery {
    version: Option<String>,
}

impl VersionQuery {
    fn required(self) -> ApiResult<String> {
        self.version
            .ok_or_else(|| MatrixError::missing_param("version is required"))
    }
}

#[derive(Deserialize)]
pub(super) struct SessionsBody {
    sessions: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
pub(super) struct RoomsBody {
    rooms: BTreeMap<String, SessionsBody>,
}

fn count_etag((count, etag): (i64, String)) -> Json<Value> {
    Json(json!({ "count": count, "etag": etag }))
}

/// `PUT /room_keys/keys`.
pub(super) async fn put_all_keys(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<VersionQuery>,
    Json(body): Json<RoomsBody>,
) -> ApiResult<Json<Value>> {
    let keys: Vec<BackupKey> = body
        .rooms
        .into_iter()
        .flat_map(|(room, r)| {
            r.sessions
                .into_iter()
                .map(move |(sid, data)| (room.clone(), sid, data))
        })
        .collect();
    let summary = state
        .e2ee
        .put_backup_keys(&session.user_id, &q.required()?, keys)
        .await?;
    Ok(count_etag(summary))
}

/// `PUT /room_keys/keys/{roomId}`.
pub(super) async fn put_room_keys(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Query(q): Query<VersionQuery>,
    Json(body): Json<SessionsBody>,
) -> ApiResult<Json<Value>> {
    let keys: Vec<BackupKey> = body
        .sessions
        .into_iter()
        .map(|(sid, data)| (room.clone(), sid, data))
        .collect();
    let summary = state
        .e2ee
        .put_backup_keys(&session.user_id, &q.required()?, keys)
        .await?;
    Ok(count_etag(summary))
}

/// `PUT /room_keys/keys/{roomId}/{sessionId}`.
pub(super) async fn put_session_key(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, sid)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
    Json(data): Json<Value>,
) -> ApiResult<Json<Value>> {
    let summary = state
        .e2ee
        .put_backup_keys(&session.user_id, &q.required()?, vec![(room, sid, data)])
        .await?;
    Ok(count_etag(summary))
}

/// `GET /room_keys/keys`.
pub(super) async fn get_all_keys(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .e2ee
            .backup_keys(&session.user_id, &q.required()?, KeyScope::default())
            .await?,
    ))
}

/// `GET /room_keys/keys/{roomId}`.
pub(super) async fn get_room_keys(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let scope = KeyScope {
        room_id: Some(room),
        session_id: None,
    };
    Ok(Json(
        state
            .e2ee
            .backup_keys(&session.user_id, &q.required()?, scope)
            .await?,
    ))
}

/// `GET /room_keys/keys/{roomId}/{sessionId}`.
pub(super) async fn get_session_key(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, sid)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let scope = KeyScope {
        room_id: Some(room),
        session_id: Some(sid),
    };
    Ok(Json(
        state
            .e2ee
            .backup_keys(&session.user_id, &q.required()?, scope)
            .await?,
    ))
}

/// `DELETE /room_keys/keys`.
pub(super) async fn delete_all_keys(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let summary = state
        .e2ee
        .delete_backup_keys(&session.user_id, &q.required()?, KeyScope::default())
        .await?;
    Ok(count_etag(summary))
}

/// `DELETE /room_keys/keys/{roomId}`.
pub(super) async fn delete_room_keys(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let scope = KeyScope {
        room_id: Some(room),
        session_id: None,
    };
    let summary = state
        .e2ee
        .delete_backup_keys(&session.user_id, &q.required()?, scope)
        .await?;
    Ok(count_etag(summary))
}

/// `DELETE /room_keys/keys/{roomId}/{sessionId}`.
pub(super) async fn delete_session_key(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, sid)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let scope = KeyScope {
        room_id: Some(room),
        session_id: Some(sid),
    };
    let summary = state
        .e2ee
        .delete_backup_keys(&session.user_id, &q.required()?, scope)
        .await?;
    Ok(count_etag(summary))
}
