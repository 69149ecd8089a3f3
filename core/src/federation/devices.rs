//! End-to-end encryption across servers: the `/user/devices`, `/user/keys/query` and
//! `/user/keys/claim` endpoints for other servers, the client's `/keys/query` and
//! `/keys/claim` reaching out to the servers of remote users, and the EDUs that carry device
//! lists, cross-signing keys and to-device messages.
//!
//! Remote users' device lists are cached while they share a room with a local user (their
//! server then announces every change here, see [`crate::e2ee::remote`]); other users are
//! asked for every time.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{Method, StatusCode},
};
use futures::future::join_all;
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Signed;
use crate::{
    e2ee::remote::{RemoteDeviceList, server_of},
    error::{MatrixError, Result},
    http::{AppState, Path, percent_encode},
};

/// Longest the client API waits for another server's keys.
const REMOTE_KEYS_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /_matrix/federation/v1/user/devices/{userId}`.
pub(super) async fn user_devices(
    State(state): State<AppState>,
    Path(user): Path<String>,
    _signed: Signed<Value>,
) -> std::result::Result<Json<Value>, MatrixError> {
    Ok(Json(state.e2ee.user_devices_for_server(&user).await?))
}

#[derive(Deserialize)]
pub(super) struct KeysQueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

/// `POST /_matrix/federation/v1/user/keys/query`.
pub(super) async fn user_keys_query(
    State(state): State<AppState>,
    signed: Signed<KeysQueryBody>,
) -> std::result::Result<Json<Value>, MatrixError> {
    Ok(Json(
        state
            .e2ee
            .query_keys_for_server(signed.body.device_keys)
            .await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct KeysClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /_matrix/federation/v1/user/keys/claim`.
pub(super) async fn user_keys_claim(
    State(state): State<AppState>,
    signed: Signed<KeysClaimBody>,
) -> std::result::Result<Json<Value>, MatrixError> {
    Ok(Json(
        state
            .e2ee
            .claim_keys_for_server(signed.body.one_time_keys)
            .await?,
    ))
}

/// Applies a device-list, cross-signing or to-device EDU received from `origin`.
pub async fn receive_edu(state: &AppState, origin: &str, edu: &Value) {
    let content = &edu["content"];
    let result = match edu["edu_type"].as_str() {
        Some("m.device_list_update") => {
            match state.e2ee.receive_device_list_update(origin, content).await {
                Ok(Some(user)) => {
                    // Updates were missed: fetch the whole list now, while the peer is here.
                    let (state, origin) = (state.clone(), origin.to_owned());
                    state.tasks.clone().spawn(async move {
                        let users = BTreeMap::from([(user, Vec::new())]);
                        let fetch = remote_device_lists(&state, &origin, &users);
                        let _ = tokio::time::timeout(REMOTE_KEYS_TIMEOUT, fetch).await;
                    });
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some("m.signing_key_update") => {
            state.e2ee.receive_signing_key_update(origin, content).await
        }
        Some("m.direct_to_device") => state.e2ee.receive_to_device(origin, content).await,
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(%origin, error = %e, "could not apply an EDU");
    }
}

/// Splits requested users into those of this server and those of each other server.
fn split_by_server<T>(
    local: &str,
    requested: BTreeMap<String, T>,
) -> (BTreeMap<String, T>, BTreeMap<String, BTreeMap<String, T>>) {
    let mut mine = BTreeMap::new();
    let mut remote: BTreeMap<String, BTreeMap<String, T>> = BTreeMap::new();
    for (user, value) in requested {
        match server_of(&user) {
            Some(server) if server != local && UserId::parse(user.as_str()).is_ok() => {
                remote
                    .entry(server.to_owned())
                    .or_default()
                    .insert(user, value);
            }
            _ => {
                mine.insert(user, value);
            }
        }
    }
    (mine, remote)
}

/// Client `/keys/query`: local users answered here, remote users from the cache or their
/// server (within the client's `timeout`, at most [`REMOTE_KEYS_TIMEOUT`]); servers that
/// could not be reached are listed in `failures`.
pub async fn query_keys(
    state: &AppState,
    caller: &UserId,
    requested: BTreeMap<String, Vec<String>>,
    timeout_ms: Option<u64>,
) -> Result<Value> {
    let (local, remote) = split_by_server(state.identity.server_name().as_str(), requested);
    let mut body = state.e2ee.query_keys(caller, local).await?;
    let wait = timeout_ms
        .map(Duration::from_millis)
        .map_or(REMOTE_KEYS_TIMEOUT, |t| t.min(REMOTE_KEYS_TIMEOUT));
    let answers = join_all(remote.into_iter().map(|(server, users)| async move {
        let found = tokio::time::timeout(wait, remote_device_lists(state, &server, &users)).await;
        (server, users, found)
    }))
    .await;
    for (server, users, found) in answers {
        let (lists, failed) = found.unwrap_or_else(|_| (BTreeMap::new(), true));
        if failed {
            body["failures"][&server] = json!({});
        }
        for (user, devices) in users {
            let Some(list) = lists.get(&user) else {
                continue;
            };
            body["device_keys"][&user] = Value::Object(list.device_keys(&devices));
            if let Some(k) = &list.master_key {
                body["master_keys"][&user] = k.clone();
            }
            if let Some(k) = &list.self_signing_key {
                body["self_signing_keys"][&user] = k.clone();
            }
        }
    }
    state
        .e2ee
        .add_own_signatures_of_remote_keys(caller.as_str(), &mut body)
        .await?;
    Ok(body)
}

/// The device lists of `users` of `server`: cached ones, then tracked users fetched with
/// `/user/devices` (and cached), then the others with one `/user/keys/query`. Returns the
/// lists found and whether any request failed.
async fn remote_device_lists(
    state: &AppState,
    server: &str,
    users: &BTreeMap<String, Vec<String>>,
) -> (BTreeMap<String, RemoteDeviceList>, bool) {
    let names: Vec<String> = users.keys().cloned().collect();
    let mut found = state
        .e2ee
        .cached_device_lists(names.clone())
        .await
        .unwrap_or_default();
    let missing: Vec<String> = names
        .into_iter()
        .filter(|u| !found.contains_key(u))
        .collect();
    if missing.is_empty() {
        return (found, false);
    }
    let Some(client) = state.federation() else {
        return (found, true);
    };
    let tracked = state.e2ee.tracked_users(missing).await.unwrap_or_default();
    let mut failed = false;
    let fetched_at = state.e2ee.current_pos();
    let fetches = tracked
        .iter()
        .filter(|(_, t)| *t)
        .map(|(user, _)| async move {
            let path = format!(
                "/_matrix/federation/v1/user/devices/{}",
                percent_encode(user)
            );
            (user, client.request(server, Method::GET, &path, None).await)
        });
    for (user, response) in join_all(fetches).await {
        let list = match response {
            Ok(r) if r.status == StatusCode::OK => {
                RemoteDeviceList::from_user_devices(user, &r.body)
            }
            _ => None,
        };
        match list {
            Some((stream_id, list)) => {
                if let Err(e) = state
                    .e2ee
                    .cache_device_list(user, stream_id, fetched_at, &list)
                    .await
                {
                    tracing::warn!(%user, error = %e, "could not cache a device list");
                }
                found.insert(user.clone(), list);
            }
            None => failed = true,
        }
    }
    let untracked: Map<String, Value> = tracked
        .iter()
        .filter(|(_, t)| !*t)
        .map(|(u, _)| (u.clone(), json!([])))
        .collect();
    if !untracked.is_empty() {
        let body = json!({ "device_keys": untracked });
        match client
            .request(
                server,
                Method::POST,
                "/_matrix/federation/v1/user/keys/query",
                Some(body),
            )
            .await
        {
            Ok(r) if r.status == StatusCode::OK => {
                for user in untracked.keys() {
                    found.insert(
                        user.clone(),
                        RemoteDeviceList::from_keys_query(user, &r.body),
                    );
                }
            }
            _ => failed = true,
        }
    }
    (found, failed)
}

/// Client `/keys/claim`: local devices' keys claimed here, remote ones from their servers
/// (within [`REMOTE_KEYS_TIMEOUT`]); servers that could not be reached are listed in
/// `failures`.
pub async fn claim_keys(
    state: &AppState,
    caller: &UserId,
    requested: BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Value> {
    let (local, remote) = split_by_server(state.identity.server_name().as_str(), requested);
    let mut body = state.e2ee.claim_keys(caller, local).await?;
    let Some(client) = state.federation() else {
        for server in remote.keys() {
            body["failures"][server] = json!({});
        }
        return Ok(body);
    };
    let answers = join_all(remote.into_iter().map(|(server, users)| async move {
        let request = client.request(
            &server,
            Method::POST,
            "/_matrix/federation/v1/user/keys/claim",
            Some(json!({ "one_time_keys": users })),
        );
        let response = tokio::time::timeout(REMOTE_KEYS_TIMEOUT, request).await;
        (server, users, response)
    }))
    .await;
    for (server, users, response) in answers {
        let claimed = match response {
            Ok(Ok(r)) if r.status == StatusCode::OK => r.body,
            _ => {
                body["failures"][&server] = json!({});
                continue;
            }
        };
        for (user, devices) in claimed["one_time_keys"].as_object().into_iter().flatten() {
            let Some(asked) = users.get(user) else {
                continue;
            };
            let keys: Map<String, Value> = devices
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(d, k)| asked.contains_key(*d) && k.is_object())
                .map(|(d, k)| (d.clone(), k.clone()))
                .collect();
            if !keys.is_empty() {
                body["one_time_keys"][user] = Value::Object(keys);
            }
        }
    }
    Ok(body)
}
