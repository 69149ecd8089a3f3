//! The client-server API: routing and the extractors every handler shares.
//!
//! Handlers parse the request, call one service function and answer. Anything a client
//! sends that cannot be parsed becomes a Matrix error, never a panic or a 500.

mod account;
mod backup;
mod devices;
mod events;
mod keys;
mod media;
mod origin;
mod presence;
mod push;
mod pushers;
mod reports;
mod rooms;
mod search;
mod sliding_sync;
mod spaces;
mod sync;
mod upgrade;
mod user;
mod versions;

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request},
    http::{StatusCode, header, request::Parts},
    routing::{get, post, put},
};
use serde::de::DeserializeOwned;

use crate::{
    accounts::Session,
    error::{ErrorCode, MatrixError},
    services::Services,
};

/// Shared state of every handler.
pub type AppState = Arc<Services>;

/// The result type of handlers.
pub type ApiResult<T> = Result<T, MatrixError>;

/// The authenticated user of a request (`Authorization: Bearer` or `?access_token=`).
pub struct Auth(pub Session);

impl FromRequestParts<AppState> for Auth {
    type Rejection = MatrixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unknown = || {
            MatrixError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::UnknownToken,
                "Unknown access token",
            )
            .with_field("soft_logout", serde_json::json!(false))
        };
        let header = parts.headers.get(header::AUTHORIZATION);
        // Tokens are ASCII: a header with other bytes names no token this server gave out.
        if header.is_some_and(|v| v.to_str().is_err()) {
            return Err(unknown());
        }
        let from_header = header.and_then(|v| v.to_str().ok()).and_then(|v| {
            // The auth scheme is case-insensitive.
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
        let token = from_header.or_else(|| {
            query_values(parts.uri.query(), "access_token")
                .into_iter()
                .next()
        });
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(MatrixError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::MissingToken,
                "Missing access token",
            ));
        };
        match state.accounts.authenticate(&token).await? {
            Some(session) => Ok(Auth(session)),
            None => Err(unknown()),
        }
    }
}

/// The user of a request that may also come without a token: `None` without one; a token
/// that is given must be valid.
pub struct OptionalAuth(pub Option<Session>);

impl FromRequestParts<AppState> for OptionalAuth {
    type Rejection = MatrixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Auth::from_request_parts(parts, state).await {
            Ok(Auth(session)) => Ok(OptionalAuth(Some(session))),
            Err(e) if e.errcode == ErrorCode::MissingToken => Ok(OptionalAuth(None)),
            Err(e) => Err(e),
        }
    }
}

/// Characters escaped in a path segment: all but RFC 3986's unreserved ones.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// Every value of `key` in a query string, decoded, in order.
pub(crate) fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// A JSON body: `M_NOT_JSON` if it is not JSON (an empty or blank body included),
/// `M_BAD_JSON` if it has the wrong shape, `M_INVALID_PARAM` if an identifier in it breaks
/// the spec's grammar or limits ([`crate::validate`]), `M_TOO_LARGE` if it is over the limit.
pub struct Json<T>(pub T);

async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, MatrixError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            MatrixError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                "Request body too large",
            )
        } else {
            MatrixError::bad_request(format!("Could not read the request body: {e}"))
        }
    })
}

pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MatrixError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(MatrixError::not_json("The request body is empty"));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| MatrixError::not_json(format!("Body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(MatrixError::bad_json("Body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        match message.strip_prefix(crate::validate::INVALID_PARAM) {
            Some(why) => MatrixError::invalid_param(why.to_owned()),
            None => MatrixError::bad_json(format!("Invalid request body: {message}")),
        }
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_body(&bytes).map(Json)
    }
}

/// A JSON body the spec makes optional in practice (joining, leaving, receipts): no body at
/// all reads as the default; anything else is read as [`Json`] reads it.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        parse_body(&bytes).map(OptionalJson)
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters, with a Matrix error on failure.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Path<T> {
    type Rejection = MatrixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| MatrixError::invalid_param(format!("Invalid path parameter: {e}")))?;
        for (name, value) in &raw {
            crate::validate::path_param(name, value)?;
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| MatrixError::invalid_param(format!("Invalid path parameter: {e}")))
    }
}

/// Query parameters, with a Matrix error on failure.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Query<T> {
    type Rejection = MatrixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| MatrixError::invalid_param(format!("Invalid query parameter: {e}")))
    }
}

/// Refuses request URLs over [`crate::validate::MAX_URI_BYTES`] with `414 M_TOO_LARGE`.
async fn limit_uri(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > crate::validate::MAX_URI_BYTES {
        return axum::response::IntoResponse::into_response(MatrixError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::TooLarge,
            format!(
                "Request URLs are at most {} bytes",
                crate::validate::MAX_URI_BYTES
            ),
        ));
    }
    next.run(req).await
}

async fn unrecognized(method: axum::http::Method, uri: axum::http::Uri) -> MatrixError {
    tracing::info!(%method, path = uri.path(), "unrecognized endpoint");
    MatrixError::unrecognized()
}

async fn method_not_allowed() -> MatrixError {
    MatrixError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Unrecognized,
        "Method not allowed",
    )
}

/// Endpoints under `/_matrix/client/{v3,r0}`.
fn client_routes() -> Router<AppState> {
    Router::new()
        .route("/capabilities", get(versions::capabilities))
        .route("/register", post(account::register))
        .route("/register/available", get(account::register_available))
        .route(
            "/register/m.login.registration_token/validity",
            get(account::registration_token_validity),
        )
        .route("/login", get(account::login_flows).post(account::login))
        .route("/logout", post(account::logout))
        .route("/logout/all", post(account::logout_all))
        .route("/account/whoami", get(account::whoami))
        .route("/account/password", post(account::change_password))
        .route("/account/deactivate", post(account::deactivate))
        .route("/devices", get(devices::devices))
        .route(
            "/devices/{device}",
            get(devices::get_device)
                .put(devices::put_device)
                .delete(devices::delete_device),
        )
        .route("/delete_devices", post(devices::delete_devices))
        .route("/createRoom", post(rooms::create_room))
        .route("/joined_rooms", get(rooms::joined_rooms))
        .route("/join/{room}", post(rooms::join))
        .route("/rooms/{room}/join", post(rooms::join_by_id))
        .route("/rooms/{room}/invite", post(rooms::invite))
        .route("/rooms/{room}/leave", post(rooms::leave))
        .route("/rooms/{room}/forget", post(rooms::forget))
        .route("/rooms/{room}/kick", post(rooms::kick))
        .route("/rooms/{room}/ban", post(rooms::ban))
        .route("/rooms/{room}/unban", post(rooms::unban))
        .route("/rooms/{room}/members", get(rooms::members))
        .route("/rooms/{room}/joined_members", get(rooms::joined_members))
        .route("/rooms/{room}/aliases", get(rooms::room_aliases))
        .route(
            "/directory/room/{alias}",
            get(rooms::get_alias)
                .put(rooms::put_alias)
                .delete(rooms::delete_alias),
        )
        .route(
            "/directory/list/room/{room}",
            get(rooms::get_visibility).put(rooms::set_visibility),
        )
        .route(
            "/publicRooms",
            get(rooms::public_rooms).post(rooms::public_rooms_post),
        )
        .route("/rooms/{room}/send/{ty}/{txn}", put(events::send))
        .route("/rooms/{room}/state", get(events::all_state))
        .route(
            "/rooms/{room}/state/{ty}",
            get(events::get_state_empty_key).put(events::put_state_empty_key),
        )
        .route(
            "/rooms/{room}/state/{ty}/",
            get(events::get_state_empty_key).put(events::put_state_empty_key),
        )
        .route(
            "/rooms/{room}/state/{ty}/{key}",
            get(events::get_state).put(events::put_state),
        )
        .route("/rooms/{room}/redact/{event}/{txn}", put(events::redact))
        .route("/rooms/{room}/event/{event}", get(events::get_event))
        .route("/rooms/{room}/messages", get(events::messages))
        .route("/rooms/{room}/context/{event}", get(events::context))
        .route("/rooms/{room}/relations/{event}", get(events::relations))
        .route(
            "/rooms/{room}/relations/{event}/{rel}",
            get(events::relations_by_type),
        )
        .route(
            "/rooms/{room}/relations/{event}/{rel}/{ty}",
            get(events::relations_by_type_and_event),
        )
        .route("/rooms/{room}/upgrade", post(upgrade::upgrade))
        .route("/rooms/{room}/report", post(reports::report_room))
        .route("/rooms/{room}/report/{event}", post(reports::report_event))
        .route("/rooms/{room}/typing/{user}", put(events::typing))
        .route("/rooms/{room}/receipt/{ty}/{event}", post(events::receipt))
        .route("/rooms/{room}/read_markers", post(events::read_markers))
        .route("/search", post(search::search))
        .route("/sync", get(sync::sync))
        .route("/user/{user}/filter", post(sync::create_filter))
        .route("/user/{user}/filter/{id}", get(sync::get_filter))
        .route("/profile/{user}", get(user::profile))
        .route(
            "/profile/{user}/{field}",
            get(user::profile_field).put(user::set_profile_field),
        )
        .route(
            "/user/{user}/account_data/{ty}",
            get(user::get_account_data).put(user::put_account_data),
        )
        .route(
            "/user/{user}/rooms/{room}/account_data/{ty}",
            get(user::get_room_account_data).put(user::put_room_account_data),
        )
        .route("/pushrules/", get(push::all_rules))
        .route("/pushrules", get(push::all_rules))
        .route("/pushrules/{scope}/", get(push::scope_rules))
        .route("/pushrules/{scope}", get(push::scope_rules))
        .route(
            "/pushrules/{scope}/{kind}/{rule}",
            get(push::get_rule)
                .put(push::put_rule)
                .delete(push::delete_rule),
        )
        .route(
            "/pushrules/{scope}/{kind}/{rule}/enabled",
            get(push::get_enabled).put(push::put_enabled),
        )
        .route(
            "/pushrules/{scope}/{kind}/{rule}/actions",
            get(push::get_actions).put(push::put_actions),
        )
        .route("/pushers", get(pushers::pushers))
        .route("/pushers/set", post(pushers::set_pusher))
        .route("/notifications", get(pushers::notifications))
        .route("/user/{user}/rooms/{room}/tags", get(user::get_tags))
        .route(
            "/user/{user}/rooms/{room}/tags/{tag}",
            put(user::put_tag).delete(user::delete_tag),
        )
        .route(
            "/presence/{user}/status",
            get(presence::status).put(presence::set_status),
        )
        .route("/user_directory/search", post(user::search_user_directory))
        .route("/voip/turnServer", get(user::turn_server))
        .route("/thirdparty/protocols", get(user::thirdparty_protocols))
        .route("/account/3pid", get(user::threepids))
        .route("/keys/upload", post(keys::upload))
        .route("/keys/query", post(keys::query))
        .route("/keys/claim", post(keys::claim))
        .route("/keys/changes", get(keys::changes))
        .route(
            "/keys/device_signing/upload",
            post(keys::device_signing_upload),
        )
        .route("/keys/signatures/upload", post(keys::signatures_upload))
        .route("/sendToDevice/{ty}/{txn}", put(keys::send_to_device))
        .route(
            "/room_keys/version",
            get(backup::latest_version).post(backup::create_version),
        )
        .route(
            "/room_keys/version/{version}",
            get(backup::get_version)
                .put(backup::put_version)
                .delete(backup::delete_version),
        )
        .route(
            "/room_keys/keys",
            get(backup::get_all_keys)
                .put(backup::put_all_keys)
                .delete(backup::delete_all_keys),
        )
        .route(
            "/room_keys/keys/{room}",
            get(backup::get_room_keys)
                .put(backup::put_room_keys)
                .delete(backup::delete_room_keys),
        )
        .route(
            "/room_keys/keys/{room}/{session}",
            get(backup::get_session_key)
                .put(backup::put_session_key)
                .delete(backup::delete_session_key),
        )
}

/// Endpoints under `/_matrix/media`: uploads, and the deprecated unauthenticated downloads.
/// Upload handlers read the raw body, which `DefaultBodyLimit` does not cover; the media
/// service enforces `Config::max_upload_bytes` itself.
fn media_routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/v1/create", post(media::create))
        .route("/v3/upload/{server}/{media}", put(media::upload_pending));
    for version in ["v3", "r0"] {
        router = router
            .route(&format!("/{version}/upload"), post(media::upload))
            .route(&format!("/{version}/config"), get(media::config))
            .route(
                &format!("/{version}/download/{{server}}/{{media}}"),
                get(media::legacy_download),
            )
            .route(
                &format!("/{version}/download/{{server}}/{{media}}/{{file}}"),
                get(media::legacy_download_named),
            )
            .route(
                &format!("/{version}/thumbnail/{{server}}/{{media}}"),
                get(media::legacy_thumbnail),
            );
    }
    router
}

/// The whole client API router.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    let origins = Arc::new(origin::OriginPolicy::from_config(&state.config));
    let v1 = Router::new()
        .route(
            "/register/m.login.registration_token/validity",
            get(account::registration_token_validity),
        )
        .route("/rooms/{room}/relations/{event}", get(events::relations))
        .route(
            "/rooms/{room}/relations/{event}/{rel}",
            get(events::relations_by_type),
        )
        .route(
            "/rooms/{room}/relations/{event}/{rel}/{ty}",
            get(events::relations_by_type_and_event),
        )
        .route("/rooms/{room}/threads", get(events::threads))
        .route(
            "/rooms/{room}/timestamp_to_event",
            get(events::timestamp_to_event),
        )
        .route("/media/config", get(media::config))
        .route("/media/download/{server}/{media}", get(media::download))
        .route(
            "/media/download/{server}/{media}/{file}",
            get(media::download_named),
        )
        .route("/media/thumbnail/{server}/{media}", get(media::thumbnail))
        .route("/room_summary/{room}", get(spaces::room_summary))
        .route("/rooms/{room}/hierarchy", get(spaces::hierarchy));
    Router::new()
        .route("/_matrix/client/versions", get(versions::versions))
        .route("/.well-known/matrix/client", get(versions::well_known))
        .route(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            post(sliding_sync::sync),
        )
        .route(
            "/_matrix/client/unstable/im.nheko.summary/summary/{room}",
            get(spaces::room_summary),
        )
        .route(
            "/_matrix/client/unstable/im.nheko.summary/rooms/{room}/summary",
            get(spaces::room_summary),
        )
        .nest("/_matrix/client/v3", client_routes())
        .nest("/_matrix/client/r0", client_routes())
        .nest("/_matrix/client/v1", v1)
        .nest("/_matrix/media", media_routes())
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(limit_uri))
        // A panic is a bug; the client still gets a Matrix error rather than a dropped connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("request handler panicked");
                axum::response::IntoResponse::into_response(MatrixError::internal())
            },
        ))
        .layer(origin::cors(origins.clone()))
        .layer(axum::middleware::from_fn_with_state(origins, origin::guard))
        .with_state(state)
}
