//! `/presence/{userId}/status`.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, Path};
use crate::error::MatrixError;

#[derive(Deserialize)]
pub(super) struct StatusBody {
    presence: String,
    status_msg: Option<String>,
}

/// `PUT /presence/{userId}/status`.
pub(super) async fn set_status(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(user): Path<String>,
    Json(body): Json<StatusBody>,
) -> ApiResult<Json<Value>> {
    if session.user_id.as_str() != user {
        return Err(MatrixError::forbidden("You may only set your own presence"));
    }
    state
        .presence
        .set_status(&user, &body.presence, body.status_msg)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /presence/{userId}/status`.
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .presence
            .status(session.user_id.as_str(), &user)
            .await?,
    ))
}
