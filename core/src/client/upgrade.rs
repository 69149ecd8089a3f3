//! `POST /rooms/{roomId}/upgrade`.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, Path};

#[derive(Deserialize)]
pub(super) struct UpgradeBody {
    new_version: String,
}

/// `POST /rooms/{roomId}/upgrade`.
pub(super) async fn upgrade(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Json(body): Json<UpgradeBody>,
) -> ApiResult<Json<Value>> {
    let new_room = state
        .rooms
        .upgrade_room(&session.user_id, &room, &body.new_version)
        .await?;
    Ok(Json(json!({ "replacement_room": new_room })))
}
