//! Simplified sliding sync (MSC4186).

use std::time::Duration;

use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiResult, AppState, Auth, Json, Query};
use crate::error::MatrixError;

#[derive(Deserialize)]
pub(super) struct SlidingSyncParams {
    pos: Option<String>,
    timeout: Option<String>,
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
pub(super) async fn sync(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<SlidingSyncParams>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let timeout = match q.timeout.as_deref() {
        None => 0,
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| MatrixError::invalid_param("timeout must be an integer"))?,
    };
    Ok(Json(
        state
            .sliding_sync
            .sync(
                session.user_id.as_str(),
                &session.device_id,
                q.pos.as_deref(),
                Duration::from_millis(timeout),
                body,
            )
            .await?,
    ))
}
