//! Room aliases across servers: `GET /_matrix/federation/v1/query/directory` for aliases of
//! this server, and resolving an alias of another server by asking it.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{Method, StatusCode},
};
use ruma::RoomAliasId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Signed;
use crate::{
    error::{MatrixError, Result},
    http::{AppState, Query, query_string},
    storage::federation as fed_store,
};

/// Longest a client waits for another server to resolve its alias.
const ALIAS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub(super) struct DirectoryQuery {
    room_alias: String,
}

/// `GET /_matrix/federation/v1/query/directory?room_alias=`.
pub(super) async fn query_directory(
    State(state): State<AppState>,
    Query(q): Query<DirectoryQuery>,
    _signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    let (room_id, servers) = local_alias(&state, &q.room_alias).await?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

/// Resolves an alias of this server: the room and the servers that can be joined through
/// (this one first, then the others with a joined member).
async fn local_alias(state: &AppState, alias: &str) -> Result<(String, Vec<String>)> {
    let local = state.identity.server_name().to_string();
    if RoomAliasId::parse(alias).map_or(true, |a| a.server_name().as_str() != local) {
        return Err(MatrixError::not_found("Not an alias of this server").into());
    }
    let (room_id, _) = state.rooms.alias(alias).await?;
    let r = room_id.clone();
    let mut servers = vec![local.clone()];
    servers.extend(
        state
            .db
            .read(move |c| fed_store::servers_in_room(c, &r))
            .await?
            .into_iter()
            .filter(|s| *s != local),
    );
    Ok((room_id, servers))
}

/// Resolves a room alias: locally for this server's aliases, else by asking the alias's
/// server. `404 M_NOT_FOUND` if it has no such alias or cannot be reached.
pub async fn resolve_alias(state: &AppState, alias: &str) -> Result<(String, Vec<String>)> {
    let parsed =
        RoomAliasId::parse(alias).map_err(|_| MatrixError::invalid_param("Invalid room alias"))?;
    let server = parsed.server_name().as_str();
    if server == state.identity.server_name().as_str() {
        return local_alias(state, alias).await;
    }
    let client = state.federation().ok_or_else(|| {
        MatrixError::not_found("Room alias not found, and peer-to-peer networking is off")
    })?;
    let path = format!(
        "/_matrix/federation/v1/query/directory?{}",
        query_string([("room_alias", alias)])
    );
    let response = tokio::time::timeout(
        ALIAS_TIMEOUT,
        client.request(server, Method::GET, &path, None),
    )
    .await;
    let body = match response {
        Ok(Ok(r)) if r.status == StatusCode::OK => r.body,
        Ok(Ok(r)) if r.status == StatusCode::NOT_FOUND => {
            return Err(MatrixError::not_found("Room alias not found").into());
        }
        Ok(Ok(r)) => {
            return Err(MatrixError::not_found(format!(
                "The alias's server answered {}",
                r.status
            ))
            .into());
        }
        _ => {
            return Err(MatrixError::not_found("The alias's server could not be reached").into());
        }
    };
    let room_id = body["room_id"]
        .as_str()
        .filter(|r| ruma::RoomId::parse(*r).is_ok())
        .ok_or_else(|| MatrixError::not_found("The alias's server gave no valid room id"))?
        .to_owned();
    let mut servers: Vec<String> = body["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|s| ruma::ServerName::parse(*s).is_ok())
        .map(str::to_owned)
        .collect();
    if !servers.iter().any(|s| s == server) {
        servers.push(server.to_owned());
    }
    Ok((room_id, servers))
}
