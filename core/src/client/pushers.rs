//! Pushers (`/pushers`, `/pushers/set`) and the notification history (`/notifications`).
//!
//! Pushers are stored and listed, but this node does not call push gateways itself: see the
//! README's notes on push notifications.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiResult, AppState, Auth, Json, Query};
use crate::{error::MatrixError, storage::pushers::PusherRow};

/// The path every push gateway URL must have.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// `GET /pushers`.
pub(super) async fn pushers(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<Value>> {
    let list = state.push.pushers(&session.user_id).await?;
    let pushers: Vec<Value> = list
        .into_iter()
        .map(|p| {
            let data: Value = serde_json::from_str(&p.data).unwrap_or_else(|_| json!({}));
            let mut v = json!({
                "app_id": p.app_id,
                "pushkey": p.pushkey,
                "kind": p.kind,
                "app_display_name": p.app_display_name,
                "device_display_name": p.device_display_name,
                "lang": p.lang,
                "data": data,
            });
            if let Some(tag) = p.profile_tag {
                v["profile_tag"] = json!(tag);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "pushers": pushers })))
}

fn string_field<'a>(body: &'a Map<String, Value>, key: &str) -> ApiResult<&'a str> {
    match body.get(key) {
        None | Some(Value::Null) => Err(MatrixError::missing_param(format!("Missing {key}"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(MatrixError::invalid_param(format!(
            "{key} must be a string"
        ))),
    }
}

/// Checks a push gateway URL: `http(s)://host[:port]/_matrix/push/v1/notify`.
fn valid_gateway_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let Some((host, path)) = rest.split_once('/') else {
        return false;
    };
    !host.is_empty()
        && !host.contains(char::is_whitespace)
        && !host.contains(['@', '?', '#'])
        && format!("/{path}") == NOTIFY_PATH
}

/// `POST /pushers/set`: creates, replaces (or with `kind: null` deletes) a pusher.
pub(super) async fn set_pusher(
    State(state): State<AppState>,
    Auth(session): Auth,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let app_id = string_field(&body, "app_id")?;
    let pushkey = string_field(&body, "pushkey")?;
    if app_id.is_empty() || app_id.len() > 64 {
        return Err(MatrixError::invalid_param(
            "app_id must be 1 to 64 characters long",
        ));
    }
    if pushkey.is_empty() || pushkey.len() > 512 {
        return Err(MatrixError::invalid_param(
            "pushkey must be 1 to 512 bytes long",
        ));
    }
    let kind = match body.get("kind") {
        None => return Err(MatrixError::missing_param("Missing kind")),
        Some(Value::Null) => {
            state
                .push
                .delete_pusher(&session.user_id, app_id, pushkey)
                .await?;
            return Ok(Json(json!({})));
        }
        Some(Value::String(k)) if k == "http" || k == "email" => k.as_str(),
        Some(_) => {
            return Err(MatrixError::invalid_param(
                "kind must be \"http\", \"email\" or null",
            ));
        }
    };
    let app_display_name = string_field(&body, "app_display_name")?;
    let device_display_name = string_field(&body, "device_display_name")?;
    let lang = string_field(&body, "lang")?;
    let data = match body.get("data") {
        None | Some(Value::Null) => return Err(MatrixError::missing_param("Missing data")),
        Some(Value::Object(d)) => d,
        Some(_) => return Err(MatrixError::invalid_param("data must be an object")),
    };
    if kind == "http" {
        match data.get("url") {
            None | Some(Value::Null) => {
                return Err(MatrixError::missing_param(
                    "data.url is required for an http pusher",
                ));
            }
            Some(Value::String(url)) if valid_gateway_url(url) => {}
            Some(_) => {
                return Err(MatrixError::invalid_param(format!(
                    "data.url must be an http(s) URL with the path {NOTIFY_PATH}"
                )));
            }
        }
        if let Some(format) = data.get("format")
            && format != "event_id_only"
        {
            return Err(MatrixError::invalid_param(
                "data.format must be \"event_id_only\" if given",
            ));
        }
    } else if !pushkey.contains('@') {
        return Err(MatrixError::invalid_param(
            "The pushkey of an email pusher is an email address",
        ));
    }
    let profile_tag = match body.get("profile_tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.len() <= 32 => Some(t.clone()),
        Some(_) => {
            return Err(MatrixError::invalid_param(
                "profile_tag must be a string of at most 32 characters",
            ));
        }
    };
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(MatrixError::invalid_param("append must be true or false")),
    };
    let pusher = PusherRow {
        app_id: app_id.to_owned(),
        pushkey: pushkey.to_owned(),
        device_id: session.device_id.clone(),
        kind: kind.to_owned(),
        app_display_name: app_display_name.to_owned(),
        device_display_name: device_display_name.to_owned(),
        profile_tag,
        lang: lang.to_owned(),
        data: serde_json::to_string(data).map_err(|_| MatrixError::internal())?,
    };
    state
        .push
        .set_pusher(&session.user_id, pusher, append)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct NotificationsQuery {
    from: Option<String>,
    limit: Option<String>,
    only: Option<String>,
}

/// `GET /notifications`.
pub(super) async fn notifications(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<NotificationsQuery>,
) -> ApiResult<Json<Value>> {
    let from = match q.from.as_deref() {
        None | Some("") => None,
        Some(f) => Some(
            f.parse::<i64>()
                .map_err(|_| MatrixError::invalid_param("Invalid from token"))?,
        ),
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => 20,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| MatrixError::invalid_param("limit must be a non-negative integer"))?
            .clamp(1, 100),
    };
    let only_highlight = q.only.as_deref() == Some("highlight");
    let page = state
        .push
        .notifications(
            &session.user_id,
            &session.device_id,
            from,
            only_highlight,
            limit,
        )
        .await?;
    let mut body = json!({ "notifications": page.notifications });
    if let Some(token) = page.next_token {
        body["next_token"] = json!(token);
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::valid_gateway_url;

    #[test]
    fn gateway_urls_need_the_notify_path() {
        assert!(valid_gateway_url(
            "https://push.example.org/_matrix/push/v1/notify"
        ));
        assert!(valid_gateway_url(
            "http://127.0.0.1:5000/_matrix/push/v1/notify"
        ));
        assert!(!valid_gateway_url("https://push.example.org/"));
        assert!(!valid_gateway_url(
            "https://push.example.org/_matrix/push/v1/notify/x"
        ));
        assert!(!valid_gateway_url(
            "ftp://push.example.org/_matrix/push/v1/notify"
        ));
        assert!(!valid_gateway_url("https:///_matrix/push/v1/notify"));
        assert!(!valid_gateway_url("not a url"));
    }
}
