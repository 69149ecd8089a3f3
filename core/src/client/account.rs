//! Registration, login, logout, whoami, password change (devices: `devices.rs`).

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, Query};
use crate::{
    accounts::Login,
    config::RegistrationMode,
    error::{ErrorCode, MatrixError},
    uia::AuthData,
    validate::DeviceId,
};

#[derive(Deserialize)]
pub(super) struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<DeviceId>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    auth: Option<AuthData>,
}

#[derive(Deserialize)]
pub(super) struct KindQuery {
    kind: Option<String>,
}

fn login_body(state: &AppState, login: &Login) -> Value {
    json!({
        "user_id": login.user_id,
        "access_token": login.access_token,
        "device_id": login.device_id,
        "home_server": state.identity.server_name(),
        "well_known": { "m.homeserver": { "base_url": state.client_url() } },
    })
}

/// `POST /register`.
pub(super) async fn register(
    State(state): State<AppState>,
    Query(q): Query<KindQuery>,
    Json(body): Json<RegisterBody>,
) -> ApiResult<Json<Value>> {
    if q.kind.as_deref() == Some("guest") {
        return Err(MatrixError::forbidden(
            "Guest accounts are not available on this server",
        ));
    }
    let stage = match &state.config.registration {
        RegistrationMode::Disabled => {
            return Err(MatrixError::forbidden(
                "Registration is disabled on this server",
            ));
        }
        RegistrationMode::Open => "m.login.dummy",
        RegistrationMode::Token(_) => "m.login.registration_token",
    };
    let localpart = match &body.username {
        Some(u) => u.to_lowercase(),
        None => crate::accounts::random_string(12).to_lowercase(),
    };
    state.accounts.check_available(&localpart).await?;
    let auth = body.auth.unwrap_or_default();
    let session = auth.session.as_deref();
    match (auth.kind.as_deref(), &state.config.registration) {
        (Some("m.login.dummy"), RegistrationMode::Open) => state.limits.registration_attempt()?,
        (Some("m.login.registration_token"), RegistrationMode::Token(expected)) => {
            state.limits.registration_attempt()?;
            let given = auth.token.as_deref().unwrap_or("");
            if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                return Err(state.uia.challenge(
                    stage,
                    session,
                    Some((ErrorCode::Forbidden, "Invalid registration token")),
                ));
            }
        }
        _ => return Err(state.uia.challenge(stage, session, None)),
    }
    let password = body
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| MatrixError::missing_param("A password is required"))?;
    if password.len() > 512 {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WeakPassword,
            "Password too long",
        ));
    }
    let user_id = state.accounts.register(&localpart, Some(&password)).await?;
    state.uia.finish(session);
    if body.inhibit_login {
        return Ok(Json(
            json!({ "user_id": user_id, "home_server": state.identity.server_name() }),
        ));
    }
    let login = state
        .accounts
        .issue_login(
            &user_id,
            body.device_id.map(|d| d.0),
            body.initial_device_display_name,
        )
        .await?;
    Ok(Json(login_body(&state, &login)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
pub(super) struct UsernameQuery {
    username: String,
}

/// `GET /register/available`.
pub(super) async fn register_available(
    State(state): State<AppState>,
    Query(q): Query<UsernameQuery>,
) -> ApiResult<Json<Value>> {
    if state.config.registration == RegistrationMode::Disabled {
        return Err(MatrixError::forbidden(
            "Registration is disabled on this server",
        ));
    }
    state
        .accounts
        .check_available(&q.username.to_lowercase())
        .await?;
    Ok(Json(json!({ "available": true })))
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    token: String,
}

/// `GET /register/m.login.registration_token/validity`.
pub(super) async fn registration_token_validity(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Json<Value>> {
    match &state.config.registration {
        RegistrationMode::Token(expected) => {
            state.limits.registration_attempt()?;
            Ok(Json(
                json!({ "valid": constant_time_eq(q.token.as_bytes(), expected.as_bytes()) }),
            ))
        }
        _ => Err(MatrixError::forbidden(
            "Registration tokens are not in use on this server",
        )),
    }
}

/// `GET /login`.
pub(super) async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
pub(super) struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Value>,
    user: Option<String>,
    password: Option<String>,
    device_id: Option<DeviceId>,
    initial_device_display_name: Option<String>,
}

/// The user named by a login identifier (`m.id.user`) or the legacy `user` field.
fn identified_user(identifier: Option<&Value>, user: Option<&str>) -> ApiResult<String> {
    if let Some(id) = identifier {
        return match id.get("type").and_then(Value::as_str) {
            Some("m.id.user") => id
                .get("user")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| MatrixError::bad_json("identifier.user is required")),
            Some(_) => Err(MatrixError::forbidden(
                "Only m.id.user identifiers are supported",
            )),
            None => Err(MatrixError::bad_json("identifier.type is required")),
        };
    }
    user.map(str::to_owned)
        .ok_or_else(|| MatrixError::bad_json("identifier is required"))
}

/// `POST /login`.
pub(super) async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginBody>,
) -> ApiResult<Json<Value>> {
    if body.kind != "m.login.password" {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::Unknown,
            "Unsupported login type",
        ));
    }
    let user = identified_user(body.identifier.as_ref(), body.user.as_deref())?;
    let password = body
        .password
        .ok_or_else(|| MatrixError::bad_json("password is required"))?;
    let user_id = state
        .accounts
        .parse_user(&user)
        .map_err(|_| MatrixError::forbidden("Invalid username or password"))?;
    state.limits.password_attempt(user_id.as_str())?;
    state.accounts.check_password(&user_id, &password).await?;
    state.limits.password_ok(user_id.as_str());
    let login = state
        .accounts
        .issue_login(
            &user_id,
            body.device_id.map(|d| d.0),
            body.initial_device_display_name,
        )
        .await?;
    Ok(Json(login_body(&state, &login)))
}

/// `POST /logout`.
pub(super) async fn logout(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<Value>> {
    state.accounts.logout(&session).await?;
    Ok(Json(json!({})))
}

/// `POST /logout/all`.
pub(super) async fn logout_all(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<Value>> {
    state.accounts.logout_all(&session.user_id).await?;
    Ok(Json(json!({})))
}

/// `GET /account/whoami`.
pub(super) async fn whoami(Auth(session): Auth) -> Json<Value> {
    Json(json!({ "user_id": session.user_id, "device_id": session.device_id, "is_guest": false }))
}

#[derive(Deserialize)]
pub(super) struct PasswordBody {
    new_password: String,
    logout_devices: Option<bool>,
    auth: Option<AuthData>,
}

/// `POST /account/password` (UIA with `m.login.password`).
pub(super) async fn change_password(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<PasswordBody>,
) -> ApiResult<Json<Value>> {
    let sid = password_stage(&state, &session, body.auth).await?;
    let sid = sid.as_deref();
    if body.new_password.is_empty() {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WeakPassword,
            "Password is empty",
        ));
    }
    state
        .accounts
        .set_password(
            &session,
            &body.new_password,
            body.logout_devices.unwrap_or(true),
        )
        .await?;
    state.uia.finish(sid);
    Ok(Json(json!({})))
}

/// Checks the `m.login.password` UIA stage for the session's own user; answers the 401
/// challenge when the stage is missing or wrong. Returns the UIA session id to finish.
async fn password_stage(
    state: &AppState,
    session: &crate::accounts::Session,
    auth: Option<AuthData>,
) -> ApiResult<Option<String>> {
    const STAGE: &str = "m.login.password";
    let auth = auth.unwrap_or_default();
    let sid = auth.session.as_deref();
    if auth.kind.as_deref() != Some(STAGE) {
        return Err(state.uia.challenge(STAGE, sid, None));
    }
    let claimed = identified_user(auth.identifier.as_ref(), auth.user.as_deref())
        .ok()
        .and_then(|u| state.accounts.parse_user(&u).ok());
    if claimed.as_ref().is_some_and(|u| *u != session.user_id) {
        return Err(state
            .uia
            .challenge(STAGE, sid, Some((ErrorCode::Forbidden, "Wrong user"))));
    }
    let password = auth.password.unwrap_or_default();
    state.limits.password_attempt(session.user_id.as_str())?;
    if !state
        .accounts
        .password_matches(&session.user_id, &password)
        .await?
    {
        return Err(state.uia.challenge(
            STAGE,
            sid,
            Some((ErrorCode::Forbidden, "Invalid password")),
        ));
    }
    state.limits.password_ok(session.user_id.as_str());
    Ok(auth.session)
}

#[derive(Deserialize)]
pub(super) struct DeactivateBody {
    auth: Option<AuthData>,
    /// Accepted; a node keeps no copies of a user's content to erase beyond the rooms.
    #[allow(dead_code)]
    erase: Option<bool>,
    #[allow(dead_code)]
    id_server: Option<String>,
}

/// `POST /account/deactivate` (UIA with `m.login.password`).
pub(super) async fn deactivate(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<DeactivateBody>,
) -> ApiResult<Json<Value>> {
    let sid = password_stage(&state, &session, body.auth).await?;
    crate::deactivation::deactivate(&state, &session.user_id).await?;
    state.uia.finish(sid.as_deref());
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
