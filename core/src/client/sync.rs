//! `/sync` and filters.

use std::time::Duration;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, Path, Query};
use crate::{error::MatrixError, filter::Filter, sync::SyncRequest};

#[derive(Deserialize)]
pub(super) struct SyncParams {
    since: Option<String>,
    filter: Option<String>,
    full_state: Option<String>,
    timeout: Option<String>,
    set_presence: Option<String>,
}

/// `GET /sync`.
pub(super) async fn sync(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<SyncParams>,
) -> ApiResult<Json<Value>> {
    let filter = match q.filter.as_deref() {
        None | Some("") => Filter::default(),
        Some(f) if f.trim_start().starts_with('{') => serde_json::from_str(f)
            .map_err(|e| MatrixError::invalid_param(format!("Invalid filter: {e}")))?,
        Some(id) => state.user_data.filter(session.user_id.as_str(), id).await?,
    };
    let timeout = match q.timeout.as_deref() {
        None => 0,
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| MatrixError::invalid_param("timeout must be an integer"))?,
    };
    let full_state = match q.full_state.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(MatrixError::invalid_param(
                "full_state must be true or false",
            ));
        }
    };
    state
        .presence
        .on_sync(session.user_id.as_str(), q.set_presence.as_deref())
        .await?;
    let req = SyncRequest {
        since: q.since,
        full_state,
        timeout: Duration::from_millis(timeout),
        filter,
    };
    Ok(Json(
        state
            .sync
            .sync(session.user_id.as_str(), &session.device_id, req)
            .await?,
    ))
}

fn own_user(session: &crate::accounts::Session, user: &str) -> ApiResult<()> {
    if session.user_id.as_str() == user {
        Ok(())
    } else {
        Err(MatrixError::forbidden(
            "You may only manage your own filters",
        ))
    }
}

/// `POST /user/{userId}/filter`.
pub(super) async fn create_filter(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(user): Path<String>,
    Json(filter): Json<Filter>,
) -> ApiResult<Json<Value>> {
    own_user(&session, &user)?;
    let id = state.user_data.create_filter(&user, &filter).await?;
    Ok(Json(json!({ "filter_id": id })))
}

/// `GET /user/{userId}/filter/{filterId}`.
pub(super) async fn get_filter(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    own_user(&session, &user)?;
    let filter = state.user_data.filter(&user, &id).await?;
    Ok(Json(
        serde_json::to_value(filter).map_err(|_| MatrixError::internal())?,
    ))
}
