//! End-to-end encryption keys and to-device messages: `/keys/*` and `/sendToDevice`.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiResult, AppState, Auth, Json, Path, Query, devices::require_password};
use crate::{
    e2ee::{CrossSigningOutcome, CrossSigningUpload, KeysUpload},
    error::MatrixError,
    rooms::timeline::parse_token,
    uia::AuthData,
};

#[derive(Deserialize)]
pub(super) struct UploadBody {
    device_keys: Option<Value>,
    one_time_keys: Option<Map<String, Value>>,
    fallback_keys: Option<Map<String, Value>>,
}

/// `POST /keys/upload`.
pub(super) async fn upload(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<UploadBody>,
) -> ApiResult<Json<Value>> {
    let upload = KeysUpload {
        device_keys: body.device_keys.filter(|k| !k.is_null()),
        one_time_keys: body.one_time_keys.unwrap_or_default(),
        fallback_keys: body.fallback_keys.unwrap_or_default(),
    };
    let counts = state
        .e2ee
        .upload_keys(&session.user_id, &session.device_id, upload)
        .await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

#[derive(Deserialize)]
pub(super) struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
    timeout: Option<u64>,
}

/// `POST /keys/query`.
pub(super) async fn query(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<QueryBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .federated()
            .query_keys(&session.user_id, body.device_keys, body.timeout)
            .await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /keys/claim`.
pub(super) async fn claim(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<ClaimBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .federated()
            .claim_keys(&session.user_id, body.one_time_keys)
            .await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct ChangesQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /keys/changes`.
pub(super) async fn changes(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<Json<Value>> {
    let token = |t: Option<String>, name: &str| {
        let t = t.ok_or_else(|| MatrixError::missing_param(format!("{name} is required")))?;
        parse_token(&t).ok_or_else(|| MatrixError::invalid_param(format!("Invalid {name} token")))
    };
    let (from, to) = (token(q.from, "from")?, token(q.to, "to")?);
    let (changed, left) = state.e2ee.key_changes(&session.user_id, from, to).await?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}

#[derive(Deserialize)]
pub(super) struct DeviceSigningBody {
    master_key: Option<Value>,
    self_signing_key: Option<Value>,
    user_signing_key: Option<Value>,
    auth: Option<AuthData>,
}

/// `POST /keys/device_signing/upload` (UIA with `m.login.password` when replacing keys).
pub(super) async fn device_signing_upload(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<DeviceSigningBody>,
) -> ApiResult<Json<Value>> {
    let authenticated = match body.auth {
        Some(auth) => {
            require_password(&state, &session, Some(auth)).await?;
            true
        }
        None => false,
    };
    let upload = CrossSigningUpload {
        master_key: body.master_key.filter(|k| !k.is_null()),
        self_signing_key: body.self_signing_key.filter(|k| !k.is_null()),
        user_signing_key: body.user_signing_key.filter(|k| !k.is_null()),
    };
    match state
        .e2ee
        .upload_cross_signing_keys(&session.user_id, upload, authenticated)
        .await?
    {
        CrossSigningOutcome::Stored => Ok(Json(json!({}))),
        CrossSigningOutcome::NeedsAuth => Err(state.uia.challenge("m.login.password", None, None)),
    }
}

/// `POST /keys/signatures/upload`.
pub(super) async fn signatures_upload(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<BTreeMap<String, BTreeMap<String, Value>>>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state.e2ee.upload_signatures(&session.user_id, body).await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct SendToDeviceBody {
    messages: BTreeMap<String, BTreeMap<String, Value>>,
}

/// `PUT /sendToDevice/{eventType}/{txnId}`.
pub(super) async fn send_to_device(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((ty, txn)): Path<(String, String)>,
    Json(body): Json<SendToDeviceBody>,
) -> ApiResult<Json<Value>> {
    state
        .e2ee
        .send_to_device(
            &session.user_id,
            &session.device_id,
            &ty,
            &txn,
            body.messages,
        )
        .await?;
    Ok(Json(json!({})))
}
