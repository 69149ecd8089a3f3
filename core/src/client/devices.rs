//! Devices: list, get, rename, delete (with user-interactive auth).

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, OptionalJson, Path};
use crate::{
    accounts::Session,
    error::{ErrorCode, MatrixError},
    storage::accounts::DeviceRow,
    uia::AuthData,
};

/// The UIA stage that protects destructive requests.
const PASSWORD_STAGE: &str = "m.login.password";

/// Checks user-interactive auth with `m.login.password` for the caller: the 401 challenge
/// when `auth` is missing or the password is wrong, `403 M_FORBIDDEN` when it names another
/// user.
pub(super) async fn require_password(
    state: &AppState,
    session: &Session,
    auth: Option<AuthData>,
) -> ApiResult<()> {
    let auth = auth.unwrap_or_default();
    let sid = auth.session.as_deref();
    if auth.kind.as_deref() != Some(PASSWORD_STAGE) {
        return Err(state.uia.challenge(PASSWORD_STAGE, sid, None));
    }
    let claimed = auth
        .identifier
        .as_ref()
        .and_then(|i| i.get("user"))
        .and_then(Value::as_str)
        .or(auth.user.as_deref());
    if let Some(claimed) = claimed {
        let same = state
            .accounts
            .parse_user(claimed)
            .is_ok_and(|u| u == session.user_id);
        if !same {
            return Err(MatrixError::forbidden(
                "The authenticated user is not the owner of this session",
            ));
        }
    }
    let password = auth.password.as_deref().unwrap_or_default();
    state.limits.password_attempt(session.user_id.as_str())?;
    if !state
        .accounts
        .password_matches(&session.user_id, password)
        .await?
    {
        return Err(state.uia.challenge(
            PASSWORD_STAGE,
            sid,
            Some((ErrorCode::Forbidden, "Invalid password")),
        ));
    }
    state.limits.password_ok(session.user_id.as_str());
    state.uia.finish(sid);
    Ok(())
}

fn device_json(d: &DeviceRow) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ts": d.last_seen_ts,
    })
}

/// `GET /devices`.
pub(super) async fn devices(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<Value>> {
    let devices = state.accounts.devices(&session.user_id).await?;
    let list: Vec<Value> = devices.iter().map(device_json).collect();
    Ok(Json(json!({ "devices": list })))
}

/// `GET /devices/{deviceId}`.
pub(super) async fn get_device(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(device_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let device = state.accounts.device(&session.user_id, &device_id).await?;
    Ok(Json(device_json(&device)))
}

#[derive(Deserialize)]
pub(super) struct UpdateDeviceBody {
    display_name: Option<String>,
}

/// `PUT /devices/{deviceId}`.
pub(super) async fn put_device(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(device_id): Path<String>,
    Json(body): Json<UpdateDeviceBody>,
) -> ApiResult<Json<Value>> {
    match body.display_name {
        Some(name) => {
            state
                .accounts
                .set_device_display_name(&session.user_id, &device_id, Some(name))
                .await?
        }
        // Nothing to change, but an unknown device is still a 404.
        None => {
            state.accounts.device(&session.user_id, &device_id).await?;
        }
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
pub(super) struct DeleteDeviceBody {
    auth: Option<AuthData>,
}

/// `DELETE /devices/{deviceId}` (UIA with `m.login.password`).
pub(super) async fn delete_device(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(device_id): Path<String>,
    OptionalJson(body): OptionalJson<DeleteDeviceBody>,
) -> ApiResult<Json<Value>> {
    require_password(&state, &session, body.auth).await?;
    state
        .accounts
        .delete_devices(&session.user_id, vec![device_id])
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct DeleteDevicesBody {
    devices: Vec<String>,
    auth: Option<AuthData>,
}

/// `POST /delete_devices` (UIA with `m.login.password`).
pub(super) async fn delete_devices(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<DeleteDevicesBody>,
) -> ApiResult<Json<Value>> {
    require_password(&state, &session, body.auth).await?;
    state
        .accounts
        .delete_devices(&session.user_id, body.devices)
        .await?;
    Ok(Json(json!({})))
}
