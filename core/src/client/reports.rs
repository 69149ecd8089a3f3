//! `/rooms/{roomId}/report`.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, Path};

#[derive(Deserialize)]
pub(super) struct ReportBody {
    reason: Option<String>,
    score: Option<i64>,
}

/// `POST /rooms/{roomId}/report/{eventId}`.
pub(super) async fn report_event(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((room, event)): Path<(String, String)>,
    Json(body): Json<ReportBody>,
) -> ApiResult<Json<Value>> {
    state
        .rooms
        .report_event(
            session.user_id.as_str(),
            &room,
            &event,
            body.reason,
            body.score,
        )
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct RoomReportBody {
    reason: Option<String>,
}

/// `POST /rooms/{roomId}/report`.
pub(super) async fn report_room(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Json(body): Json<RoomReportBody>,
) -> ApiResult<Json<Value>> {
    state
        .rooms
        .report_room(session.user_id.as_str(), &room, body.reason)
        .await?;
    Ok(Json(json!({})))
}
