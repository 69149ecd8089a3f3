//! `/versions`, `/.well-known/matrix/client` and `/capabilities`.

use axum::{Json, extract::State, http::HeaderMap};
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth};
use crate::rooms::graph::{DEFAULT_VERSION, SUPPORTED_VERSIONS};

/// `GET /_matrix/client/versions`: only versions whose endpoints this node serves.
pub(super) async fn versions() -> Json<Value> {
    Json(json!({
        // v1.6 brought `/timestamp_to_event`, v1.7 asynchronous uploads, v1.10 `/relations`
        // with `recurse`, v1.11 authenticated media: all served. (Optional parts a server
        // may turn off, such as URL previews and login tokens, are off.)
        "versions": [
            "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
            "v1.10", "v1.11",
        ],
        // The unstable names of what those versions made stable, for older clients;
        // `org.matrix.simplified_msc3575`: simplified sliding sync (MSC4186), the gate for
        // matrix-rust-sdk's room list and Element X.
        "unstable_features": {
            "org.matrix.msc3916.stable": true,
            "org.matrix.msc3981": true,
            "org.matrix.simplified_msc3575": true,
        },
    }))
}

/// `GET /.well-known/matrix/client`: points clients at the address they used.
pub(super) async fn well_known(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let base = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_else(|| state.client_url());
    Json(json!({ "m.homeserver": { "base_url": base } }))
}

/// `GET /capabilities`.
pub(super) async fn capabilities(Auth(_): Auth) -> ApiResult<Json<Value>> {
    let available: serde_json::Map<String, Value> = SUPPORTED_VERSIONS
        .iter()
        .map(|v| ((*v).to_owned(), json!("stable")))
        .collect();
    Ok(Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": { "default": DEFAULT_VERSION.as_str(), "available": available },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
        }
    })))
}
