//! Profiles and account data.

use axum::extract::State;
use serde_json::{Map, Value, json};

use super::{ApiResult, AppState, Auth, Json, Path};
use crate::error::MatrixError;

/// `GET /profile/{userId}`.
pub(super) async fn profile(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    let (name, avatar) = state.user_data.profile(&user).await?;
    let mut body = Map::new();
    if let Some(n) = name {
        body.insert("displayname".into(), json!(n));
    }
    if let Some(a) = avatar {
        body.insert("avatar_url".into(), json!(a));
    }
    Ok(Json(Value::Object(body)))
}

fn check_field(field: &str) -> ApiResult<()> {
    match field {
        "displayname" | "avatar_url" => Ok(()),
        _ => Err(MatrixError::not_found("Unknown profile field")),
    }
}

/// `GET /profile/{userId}/{field}`.
pub(super) async fn profile_field(
    State(state): State<AppState>,
    Path((user, field)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_field(&field)?;
    let (name, avatar) = state.user_data.profile(&user).await?;
    let value = if field == "displayname" { name } else { avatar };
    match value {
        Some(v) => Ok(Json(json!({ field: v }))),
        None => Err(MatrixError::not_found("Profile field not set")),
    }
}

/// `PUT /profile/{userId}/{field}`.
pub(super) async fn set_profile_field(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, field)): Path<(String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    check_field(&field)?;
    if session.user_id.as_str() != user {
        return Err(MatrixError::forbidden(
            "You may only change your own profile",
        ));
    }
    // An explicit null clears the field; leaving it out is a mistake, not a request.
    let value = match body.get(&field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => None,
        None => return Err(MatrixError::missing_param(format!("{field} is required"))),
        Some(_) => return Err(MatrixError::bad_json(format!("{field} must be a string"))),
    };
    if let Some(v) = &value {
        if field == "displayname" {
            crate::validate::displayname(v)?;
        } else if v.len() > 256 * 4 {
            return Err(MatrixError::bad_json(format!("{field} is too long")));
        }
    }
    state
        .user_data
        .set_profile_field(&session.user_id, &field, value)
        .await?;
    Ok(Json(json!({})))
}

fn own(session: &crate::accounts::Session, user: &str) -> ApiResult<()> {
    if session.user_id.as_str() == user {
        Ok(())
    } else {
        Err(MatrixError::forbidden(
            "You may only access your own account data",
        ))
    }
}

fn room_id(room: &str) -> ApiResult<()> {
    ruma::RoomId::parse(room)
        .map(|_| ())
        .map_err(|_| MatrixError::invalid_param("Invalid room id"))
}

/// `GET /user/{userId}/account_data/{type}`.
pub(super) async fn get_account_data(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, ty)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    own(&session, &user)?;
    Ok(Json(state.user_data.account_data(&user, None, &ty).await?))
}

/// `PUT /user/{userId}/account_data/{type}`.
pub(super) async fn put_account_data(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, ty)): Path<(String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    own(&session, &user)?;
    state
        .user_data
        .set_account_data(&user, None, &ty, &Value::Object(body))
        .await?;
    Ok(Json(json!({})))
}

/// `GET /user/{userId}/rooms/{roomId}/account_data/{type}`.
pub(super) async fn get_room_account_data(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, room, ty)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    own(&session, &user)?;
    room_id(&room)?;
    Ok(Json(
        state
            .user_data
            .account_data(&user, Some(&room), &ty)
            .await?,
    ))
}

/// `PUT /user/{userId}/rooms/{roomId}/account_data/{type}`.
pub(super) async fn put_room_account_data(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, room, ty)): Path<(String, String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    own(&session, &user)?;
    room_id(&room)?;
    state
        .user_data
        .set_account_data(&user, Some(&room), &ty, &Value::Object(body))
        .await?;
    Ok(Json(json!({})))
}

/// `GET /user/{userId}/rooms/{roomId}/tags`.
pub(super) async fn get_tags(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, room)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    own_tags(&session, &user)?;
    room_id(&room)?;
    let tags = state.user_data.tags(&user, &room).await?;
    Ok(Json(json!({ "tags": tags })))
}

/// `PUT /user/{userId}/rooms/{roomId}/tags/{tag}`: body `{"order": number}`, order optional.
pub(super) async fn put_tag(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, room, tag)): Path<(String, String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    own_tags(&session, &user)?;
    room_id(&room)?;
    check_tag(&tag)?;
    match body.get("order") {
        None | Some(Value::Number(_)) => {}
        Some(_) => return Err(MatrixError::bad_json("order must be a number")),
    }
    state
        .user_data
        .set_tag(&user, &room, &tag, Some(Value::Object(body)))
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`.
pub(super) async fn delete_tag(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((user, room, tag)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    own_tags(&session, &user)?;
    room_id(&room)?;
    check_tag(&tag)?;
    state.user_data.set_tag(&user, &room, &tag, None).await?;
    Ok(Json(json!({})))
}

fn own_tags(session: &crate::accounts::Session, user: &str) -> ApiResult<()> {
    if session.user_id.as_str() == user {
        Ok(())
    } else {
        Err(MatrixError::forbidden("You may only access your own tags"))
    }
}

fn check_tag(tag: &str) -> ApiResult<()> {
    if tag.is_empty() || tag.len() > 255 {
        return Err(MatrixError::invalid_param(
            "A tag must be 1 to 255 bytes long",
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
pub(super) struct UserSearchBody {
    search_term: String,
    limit: Option<u64>,
}

/// Most results one user directory search returns.
const MAX_USER_SEARCH_LIMIT: u64 = 100;

/// `POST /user_directory/search`.
pub(super) async fn search_user_directory(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<UserSearchBody>,
) -> ApiResult<Json<Value>> {
    let limit = body.limit.unwrap_or(10).min(MAX_USER_SEARCH_LIMIT) as usize;
    let (results, limited) = state
        .user_data
        .search_users(session.user_id.as_str(), &body.search_term, limit)
        .await?;
    Ok(Json(json!({ "results": results, "limited": limited })))
}

/// `GET /voip/turnServer`: no TURN server on a phone.
pub(super) async fn turn_server(Auth(_): Auth) -> ApiResult<Json<Value>> {
    Err(MatrixError::not_found("No TURN server is configured"))
}

/// `GET /thirdparty/protocols`: no application services bridge other networks here.
pub(super) async fn thirdparty_protocols(Auth(_): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(json!({})))
}

/// `GET /account/3pid`: accounts have no email addresses or phone numbers bound.
pub(super) async fn threepids(Auth(_): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "threepids": [] })))
}
