//! The media repository: `/_matrix/media/{v3,r0,v1}` (upload, create, and the deprecated
//! unauthenticated download, thumbnail and config) and `/_matrix/client/v1/media`
//! (authenticated download, thumbnail and config).
//!
//! Upload handlers take the raw body: the client router's JSON body limit does not apply to
//! it, and the media service enforces `Config::max_upload_bytes` while it streams the bytes
//! to disk.

use std::time::Duration;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppState, Auth, Json, Path, Query};
use crate::{
    error::MatrixError,
    media::{Content, DEFAULT_CONTENT_TYPE, ResizeMethod, ThumbnailRequest, Upload},
};

/// The `Content-Security-Policy` the spec recommends for served media.
const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Content types the spec lists as safe to serve `inline`; everything else is an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

#[derive(Deserialize)]
pub(super) struct UploadParams {
    filename: Option<String>,
}

fn upload_from(headers: &HeaderMap, params: UploadParams, body: Body) -> ApiResult<Upload> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| MatrixError::invalid_param("Content-Type must be ASCII"))?
                .to_owned(),
        ),
    };
    let declared_len = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| MatrixError::bad_request("Invalid Content-Length"))?,
        ),
    };
    Ok(Upload {
        content_type,
        filename: params.filename,
        declared_len,
        body: body
            .into_data_stream()
            .map_err(std::io::Error::other)
            .boxed(),
    })
}

/// `POST /_matrix/media/v3/upload`.
pub(super) async fn upload(
    State(state): State<AppState>,
    Auth(session): Auth,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let upload = upload_from(&headers, params, body)?;
    let uri = state.media.upload(&session.user_id, upload).await?;
    Ok(Json(json!({ "content_uri": uri })))
}

/// `POST /_matrix/media/v1/create`.
pub(super) async fn create(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<Value>> {
    let (uri, expires) = state.media.create(&session.user_id).await?;
    Ok(Json(
        json!({ "content_uri": uri, "unused_expires_at": expires }),
    ))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`.
pub(super) async fn upload_pending(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let upload = upload_from(&headers, params, body)?;
    state
        .media
        .upload_pending(&session.user_id, &server_name, &media_id, upload)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v1/media/config` and the deprecated `/_matrix/media/v3/config`.
pub(super) async fn config(State(state): State<AppState>, Auth(_): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "m.upload.size": state.media.max_upload_bytes() }),
    ))
}

#[derive(Deserialize)]
pub(super) struct DownloadParams {
    timeout_ms: Option<String>,
}

fn parse_wait(timeout_ms: Option<&str>) -> ApiResult<Option<Duration>> {
    timeout_ms
        .map(|t| {
            t.parse::<i64>()
                .map(|ms| Duration::from_millis(ms.max(0) as u64))
                .map_err(|_| MatrixError::invalid_param("timeout_ms must be an integer"))
        })
        .transpose()
}

async fn download_inner(
    state: AppState,
    server_name: String,
    media_id: String,
    filename: Option<String>,
    params: DownloadParams,
) -> ApiResult<Response> {
    let wait = parse_wait(params.timeout_ms.as_deref())?;
    let mut content = state.media.download(&server_name, &media_id, wait).await?;
    if filename.is_some() {
        content.filename = filename;
    }
    let inline = is_inline(&content.content_type);
    Ok(media_response(content, inline))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`.
pub(super) async fn download(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(params): Query<DownloadParams>,
) -> ApiResult<Response> {
    download_inner(state, server_name, media_id, None, params).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`.
pub(super) async fn download_named(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server_name, media_id, filename)): Path<(String, String, String)>,
    Query(params): Query<DownloadParams>,
) -> ApiResult<Response> {
    download_inner(state, server_name, media_id, Some(filename), params).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated, unauthenticated).
pub(super) async fn legacy_download(
    State(state): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(params): Query<DownloadParams>,
) -> ApiResult<Response> {
    download_inner(state, server_name, media_id, None, params).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated,
/// unauthenticated).
pub(super) async fn legacy_download_named(
    State(state): State<AppState>,
    Path((server_name, media_id, filename)): Path<(String, String, String)>,
    Query(params): Query<DownloadParams>,
) -> ApiResult<Response> {
    download_inner(state, server_name, media_id, Some(filename), params).await
}

#[derive(Deserialize)]
pub(super) struct ThumbnailParams {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    animated: Option<String>,
    timeout_ms: Option<String>,
}

fn parse_dimension(name: &str, value: Option<&str>) -> ApiResult<u32> {
    let value = value.ok_or_else(|| MatrixError::missing_param(format!("{name} is required")))?;
    match value.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n.min(u32::MAX as i64) as u32),
        _ => Err(MatrixError::invalid_param(format!(
            "{name} must be a positive integer"
        ))),
    }
}

async fn thumbnail_inner(
    state: AppState,
    server_name: String,
    media_id: String,
    params: ThumbnailParams,
) -> ApiResult<Response> {
    let request = ThumbnailRequest {
        width: parse_dimension("width", params.width.as_deref())?,
        height: parse_dimension("height", params.height.as_deref())?,
        method: match params.method.as_deref() {
            None | Some("scale") => ResizeMethod::Scale,
            Some("crop") => ResizeMethod::Crop,
            Some(_) => return Err(MatrixError::invalid_param("method must be crop or scale")),
        },
        animated: match params.animated.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(MatrixError::invalid_param("animated must be true or false")),
        },
    };
    let wait = parse_wait(params.timeout_ms.as_deref())?;
    let mut content = state
        .media
        .thumbnail(&server_name, &media_id, request, wait)
        .await?;
    let extension = content
        .content_type
        .strip_prefix("image/")
        .unwrap_or("bin")
        .to_owned();
    content.filename = Some(format!("thumbnail.{extension}"));
    Ok(media_response(content, true))
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`.
pub(super) async fn thumbnail(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(params): Query<ThumbnailParams>,
) -> ApiResult<Response> {
    thumbnail_inner(state, server_name, media_id, params).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated, unauthenticated).
pub(super) async fn legacy_thumbnail(
    State(state): State<AppState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(params): Query<ThumbnailParams>,
) -> ApiResult<Response> {
    thumbnail_inner(state, server_name, media_id, params).await
}

/// Whether a content type may be served `inline` (its essence is on the spec's safe list).
fn is_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

/// Bytes escaped in an RFC 8187 `filename*` value: all but its `attr-char`s.
const NOT_ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// A `Content-Disposition` value: `inline` or `attachment`, with the file name as a quoted
/// string when it is printable ASCII, or RFC 8187 `filename*` (UTF-8, percent-encoded)
/// otherwise.
fn content_disposition(inline: bool, filename: Option<&str>) -> String {
    let mut value = String::from(if inline { "inline" } else { "attachment" });
    let Some(name) = filename.filter(|n| !n.is_empty()) else {
        return value;
    };
    if name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        value.push_str("; filename=\"");
        for c in name.chars() {
            if c == '"' || c == '\\' {
                value.push('\\');
            }
            value.push(c);
        }
        value.push('"');
    } else {
        value.push_str("; filename*=utf-8''");
        value.extend(percent_encoding::utf8_percent_encode(name, NOT_ATTR_CHAR));
    }
    value
}

/// The response for served media: the bytes with their type, disposition and the headers
/// that keep a browser from running them.
fn media_response(content: Content, inline: bool) -> Response {
    let content_type = HeaderValue::from_str(&content.content_type)
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    let disposition =
        HeaderValue::from_str(&content_disposition(inline, content.filename.as_deref()))
            .unwrap_or(HeaderValue::from_static("attachment"));
    let length = HeaderValue::from(content.body.len);
    let mut response = Body::from_stream(content.body.chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, length);
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_quote_ascii_and_encode_the_rest() {
        assert_eq!(content_disposition(true, None), "inline");
        assert_eq!(
            content_disposition(false, Some("name;with;semicolons")),
            "attachment; filename=\"name;with;semicolons\""
        );
        assert_eq!(
            content_disposition(true, Some("a \"b\"\\c")),
            "inline; filename=\"a \\\"b\\\"\\\\c\""
        );
        assert_eq!(
            content_disposition(true, Some("\u{1F414}.png")),
            "inline; filename*=utf-8''%F0%9F%90%94.png"
        );
        assert_eq!(
            content_disposition(true, Some("line\nbreak")),
            "inline; filename*=utf-8''line%0Abreak"
        );
    }

    #[test]
    fn only_listed_types_are_inline() {
        assert!(is_inline("image/png"));
        assert!(is_inline("Text/Plain; charset=utf-8"));
        assert!(!is_inline("image/svg+xml"));
        assert!(!is_inline("text/html"));
        assert!(!is_inline("img/png"));
    }
}
