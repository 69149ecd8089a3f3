//! `POST /search`.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, Query};
use crate::rooms::search::RoomEventsCriteria;

#[derive(Deserialize)]
pub(super) struct SearchParams {
    next_batch: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SearchBody {
    search_categories: Categories,
}

#[derive(Deserialize)]
pub(super) struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

/// `POST /search`: the `room_events` category.
pub(super) async fn search(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<SearchParams>,
    Json(body): Json<SearchBody>,
) -> ApiResult<Json<Value>> {
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let room_events = state
        .rooms
        .search_room_events(
            session.user_id.as_str(),
            &session.device_id,
            criteria,
            q.next_batch,
        )
        .await?;
    Ok(Json(
        json!({ "search_categories": { "room_events": room_events } }),
    ))
}
