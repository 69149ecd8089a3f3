//! Room creation, membership, members, aliases and the room directory.

use axum::extract::State;
use ruma::{RoomAliasId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiResult, AppState, Auth, Json, OptionalJson, Path, Query, query_values};
use crate::{
    error::MatrixError,
    rooms::{create::CreateRoomRequest, membership::MembershipAction},
    validate::UserIdParam,
};

/// `POST /createRoom`.
pub(super) async fn create_room(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<CreateRoomRequest>,
) -> ApiResult<Json<Value>> {
    body.check_state()?;
    let room_id = state.rooms.create_room(&session.user_id, body).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `GET /joined_rooms`.
pub(super) async fn joined_rooms(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<Value>> {
    let rooms = state.rooms.joined_rooms(session.user_id.as_str()).await?;
    Ok(Json(json!({ "joined_rooms": rooms })))
}

#[derive(Deserialize, Default)]
pub(super) struct JoinBody {
    reason: Option<String>,
}

/// `POST /join/{roomIdOrAlias}`.
pub(super) async fn join(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    uri: axum::http::Uri,
    OptionalJson(body): OptionalJson<JoinBody>,
) -> ApiResult<Json<Value>> {
    if !(room.starts_with('!') || room.starts_with('#')) {
        return Err(MatrixError::invalid_param("Expected a room id or alias"));
    }
    if room.starts_with('!') && ruma::RoomId::parse(room.as_str()).is_err() {
        return Err(MatrixError::invalid_param("Invalid room id"));
    }
    // The servers to join through, should the room live elsewhere.
    let mut via = query_values(uri.query(), "server_name");
    via.extend(query_values(uri.query(), "via"));
    let room_id = state
        .federated()
        .join(&session.user_id, &room, via, body.reason)
        .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /rooms/{roomId}/join`.
pub(super) async fn join_by_id(
    state: State<AppState>,
    auth: Auth,
    Path(room): Path<String>,
    uri: axum::http::Uri,
    body: OptionalJson<JoinBody>,
) -> ApiResult<Json<Value>> {
    if !room.starts_with('!') {
        return Err(MatrixError::invalid_param("Expected a room id"));
    }
    join(state, auth, Path(room), uri, body).await
}

#[derive(Deserialize)]
pub(super) struct TargetBody {
    user_id: UserIdParam,
    reason: Option<String>,
}

async fn act_on(
    state: &AppState,
    sender: &UserId,
    room: &str,
    body: TargetBody,
    action: MembershipAction,
) -> ApiResult<Json<Value>> {
    state
        .rooms
        .change_membership(
            sender,
            room,
            &body.user_id.0,
            action,
            body.reason,
            Map::new(),
        )
        .await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/invite`.
pub(super) async fn invite(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Json(body): Json<TargetBody>,
) -> ApiResult<Json<Value>> {
    // Users of other servers too: their server is sent the invite through the outbox.
    act_on(
        &state,
        &session.user_id,
        &room,
        body,
        MembershipAction::Invite,
    )
    .await
}

/// `POST /rooms/{roomId}/kick`.
pub(super) async fn kick(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Json(body): Json<TargetBody>,
) -> ApiResult<Json<Value>> {
    act_on(
        &state,
        &session.user_id,
        &room,
        body,
        MembershipAction::Kick,
    )
    .await
}

/// `POST /rooms/{roomId}/ban`.
pub(super) async fn ban(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Json(body): Json<TargetBody>,
) -> ApiResult<Json<Value>> {
    act_on(&state, &session.user_id, &room, body, MembershipAction::Ban).await
}

/// `POST /rooms/{roomId}/unban`.
pub(super) async fn unban(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Json(body): Json<TargetBody>,
) -> ApiResult<Json<Value>> {
    act_on(
        &state,
        &session.user_id,
        &room,
        body,
        MembershipAction::Unban,
    )
    .await
}

/// `POST /rooms/{roomId}/leave`.
pub(super) async fn leave(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    OptionalJson(body): OptionalJson<JoinBody>,
) -> ApiResult<Json<Value>> {
    state
        .federated()
        .leave(&session.user_id, &room, body.reason)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/forget`.
pub(super) async fn forget(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
) -> ApiResult<Json<Value>> {
    state.rooms.forget(&session.user_id, &room).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct MembersQuery {
    membership: Option<String>,
    not_membership: Option<String>,
    at: Option<String>,
}

fn membership_param(value: Option<String>, name: &str) -> ApiResult<Option<String>> {
    match value.as_deref() {
        None | Some("join" | "invite" | "knock" | "leave" | "ban") => Ok(value),
        Some(_) => Err(MatrixError::invalid_param(format!(
            "{name} must be one of join, invite, knock, leave, ban"
        ))),
    }
}

/// `GET /rooms/{roomId}/members`.
pub(super) async fn members(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Query(q): Query<MembersQuery>,
) -> ApiResult<Json<Value>> {
    // The list is of the current state; an `at` token must still be one of ours.
    if let Some(at) = q.at.as_deref()
        && crate::rooms::timeline::parse_token(at).is_none()
    {
        return Err(MatrixError::invalid_param("Invalid at token"));
    }
    let membership = membership_param(q.membership, "membership")?;
    let not_membership = membership_param(q.not_membership, "not_membership")?;
    let chunk = state
        .rooms
        .members(session.user_id.as_str(), &room, membership, not_membership)
        .await?;
    Ok(Json(json!({ "chunk": chunk })))
}

/// `GET /rooms/{roomId}/joined_members`.
pub(super) async fn joined_members(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
) -> ApiResult<Json<Value>> {
    // Unlike /members, only current members may list who is joined (not former members).
    state
        .rooms
        .require_joined(&room, session.user_id.as_str())
        .await?;
    let members = state
        .rooms
        .members(session.user_id.as_str(), &room, Some("join".into()), None)
        .await?;
    let mut joined = Map::new();
    for m in members {
        if let Some(user) = m.get("state_key").and_then(Value::as_str) {
            joined.insert(
                user.to_owned(),
                json!({
                    "display_name": m.pointer("/content/displayname"),
                    "avatar_url": m.pointer("/content/avatar_url"),
                }),
            );
        }
    }
    Ok(Json(json!({ "joined": joined })))
}

fn parse_alias(alias: &str) -> ApiResult<()> {
    RoomAliasId::parse(alias)
        .map(|_| ())
        .map_err(|_| MatrixError::invalid_param("Invalid room alias"))
}

/// `GET /directory/room/{roomAlias}`.
pub(super) async fn get_alias(
    State(state): State<AppState>,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    parse_alias(&alias)?;
    let (room_id, servers) = state.federated().resolve_alias(&alias).await?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

#[derive(Deserialize)]
pub(super) struct AliasBody {
    room_id: String,
}

/// `PUT /directory/room/{roomAlias}`.
pub(super) async fn put_alias(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(alias): Path<String>,
    Json(body): Json<AliasBody>,
) -> ApiResult<Json<Value>> {
    parse_alias(&alias)?;
    state
        .rooms
        .create_alias(session.user_id.as_str(), &alias, &body.room_id)
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /directory/room/{roomAlias}`.
pub(super) async fn delete_alias(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    parse_alias(&alias)?;
    state
        .rooms
        .delete_alias(session.user_id.as_str(), &alias)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /rooms/{roomId}/aliases`.
pub(super) async fn room_aliases(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
) -> ApiResult<Json<Value>> {
    let aliases = state
        .rooms
        .room_aliases(session.user_id.as_str(), &room)
        .await?;
    Ok(Json(json!({ "aliases": aliases })))
}

/// `GET /directory/list/room/{roomId}`.
pub(super) async fn get_visibility(
    State(state): State<AppState>,
    Path(room): Path<String>,
) -> ApiResult<Json<Value>> {
    let published = state.rooms.is_published(&room).await?;
    Ok(Json(
        json!({ "visibility": if published { "public" } else { "private" } }),
    ))
}

#[derive(Deserialize)]
pub(super) struct VisibilityBody {
    visibility: String,
}

/// `PUT /directory/list/room/{roomId}`.
pub(super) async fn set_visibility(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(room): Path<String>,
    Json(body): Json<VisibilityBody>,
) -> ApiResult<Json<Value>> {
    let published = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        _ => {
            return Err(MatrixError::invalid_param(
                "visibility must be public or private",
            ));
        }
    };
    state
        .rooms
        .set_published(session.user_id.as_str(), &room, published)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct PublicRoomsQuery {
    limit: Option<String>,
    since: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct PublicRoomsBody {
    limit: Option<crate::validate::Limit>,
    since: Option<String>,
}

/// Most rooms on one page of the directory.
const MAX_PUBLIC_ROOMS_PAGE: usize = 500;

/// A page of the public room directory; `since` tokens are `p<offset>`.
async fn public_rooms_page(
    state: &AppState,
    limit: Option<usize>,
    since: Option<&str>,
) -> ApiResult<Json<Value>> {
    let offset = match since {
        None => 0,
        Some(t) => t
            .strip_prefix('p')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| MatrixError::invalid_param("Invalid since token"))?,
    };
    let all = state.rooms.public_rooms().await?;
    let total = all.len();
    let limit = limit
        .unwrap_or(MAX_PUBLIC_ROOMS_PAGE)
        .min(MAX_PUBLIC_ROOMS_PAGE);
    let chunk: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let mut body = json!({ "chunk": chunk, "total_room_count_estimate": total });
    if offset + limit < total {
        body["next_batch"] = json!(format!("p{}", offset + limit));
    }
    if offset > 0 {
        body["prev_batch"] = json!(format!("p{}", offset.saturating_sub(limit)));
    }
    Ok(Json(body))
}

/// `GET /publicRooms`.
pub(super) async fn public_rooms(
    State(state): State<AppState>,
    Query(q): Query<PublicRoomsQuery>,
) -> ApiResult<Json<Value>> {
    let limit = match q.limit.as_deref() {
        None => None,
        l => Some(crate::validate::limit_param(l, 0, MAX_PUBLIC_ROOMS_PAGE)?),
    };
    public_rooms_page(&state, limit, q.since.as_deref()).await
}

/// `POST /publicRooms`.
pub(super) async fn public_rooms_post(
    State(state): State<AppState>,
    _auth: Auth,
    Json(body): Json<PublicRoomsBody>,
) -> ApiResult<Json<Value>> {
    let limit = body
        .limit
        .map(|l| l.0.min(MAX_PUBLIC_ROOMS_PAGE as u64) as usize);
    public_rooms_page(&state, limit, body.since.as_deref()).await
}
