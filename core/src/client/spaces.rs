//! Room summaries (MSC3266, stable and `im.nheko.summary` paths) and space hierarchies.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, OptionalAuth, Path, Query};
use crate::{error::MatrixError, rooms::spaces::HierarchyQuery, validate::limit_param};

/// Rooms on a hierarchy page unless asked otherwise, and at most.
const DEFAULT_HIERARCHY_LIMIT: usize = 50;
const MAX_HIERARCHY_LIMIT: usize = 100;
/// How deep a hierarchy goes unless asked otherwise, and at most.
const MAX_HIERARCHY_DEPTH: usize = 10;

/// `GET /v1/room_summary/{roomIdOrAlias}` (also without a token).
pub(super) async fn room_summary(
    State(state): State<AppState>,
    OptionalAuth(session): OptionalAuth,
    Path(room): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = if room.starts_with('#') {
        ruma::RoomAliasId::parse(room.as_str())
            .map_err(|_| MatrixError::invalid_param("Invalid room alias"))?;
        state.federated().resolve_alias(&room).await?.0
    } else if ruma::RoomId::parse(room.as_str()).is_ok() {
        room
    } else {
        return Err(MatrixError::invalid_param("Expected a room id or alias"));
    };
    let user = session.as_ref().map(|s| s.user_id.as_str());
    Ok(Json(state.rooms.room_summary(&room_id, user).await?))
}

#[derive(Deserialize)]
pub(super) struct HierarchyParams {
    limit: Option<String>,
    max_depth: Option<String>,
    suggested_only: Option<String>,
    from: Option<String>,
}

/// `GET /v1/rooms/{roomId}/hierarchy`.
pub(super) async fn hierarchy(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Query(q): Query<HierarchyParams>,
) -> ApiResult<Json<Value>> {
    let limit = limit_param(
        q.limit.as_deref(),
        DEFAULT_HIERARCHY_LIMIT,
        MAX_HIERARCHY_LIMIT,
    )?;
    if limit == 0 {
        return Err(MatrixError::invalid_param("limit must be positive"));
    }
    let max_depth = match q.max_depth.as_deref() {
        None => MAX_HIERARCHY_DEPTH,
        Some(d) => d
            .parse::<u64>()
            .map(|d| d.min(MAX_HIERARCHY_DEPTH as u64) as usize)
            .map_err(|_| MatrixError::invalid_param("max_depth must be a non-negative integer"))?,
    };
    let suggested_only = match q.suggested_only.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(MatrixError::invalid_param(
                "suggested_only must be true or false",
            ));
        }
    };
    let skip = match q.from.as_deref() {
        None => 0,
        Some(t) => t
            .strip_prefix('h')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| MatrixError::invalid_param("Invalid from token"))?,
    };
    let query = HierarchyQuery {
        limit,
        max_depth,
        suggested_only,
        skip,
    };
    let (rooms, next) = state
        .rooms
        .hierarchy(&room, session.user_id.as_str(), query)
        .await?;
    let mut body = json!({ "rooms": rooms });
    if let Some(next) = next {
        body["next_batch"] = json!(format!("h{next}"));
    }
    Ok(Json(body))
}
