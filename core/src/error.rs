//! Errors: the Matrix error a client sees, and the internal failures behind it.
//!
//! Every handler returns [`MatrixError`]. Storage and event-graph code return [`Error`],
//! which converts into a `500 M_UNKNOWN` only for genuine internal faults; anything a
//! client can cause has its own Matrix error code.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

/// The `errcode` of a Matrix error: one variant per code this server sends. On the wire
/// (and in [`std::fmt::Display`]) it is the `M_…` string [`ErrorCode::as_str`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `M_BAD_JSON`: the body is JSON but not of the expected shape.
    BadJson,
    /// `M_CANNOT_OVERWRITE_MEDIA`: an upload to a media id that already has content.
    CannotOverwriteMedia,
    /// `M_DUPLICATE_ANNOTATION`: the same reaction sent twice.
    DuplicateAnnotation,
    /// `M_FORBIDDEN`: not allowed.
    Forbidden,
    /// `M_INCOMPATIBLE_ROOM_VERSION`: the other server cannot take part in the room's version.
    IncompatibleRoomVersion,
    /// `M_INVALID_PARAM`: a parameter has an unusable value.
    InvalidParam,
    /// `M_INVALID_SIGNATURE`: a signature on uploaded keys does not verify.
    InvalidSignature,
    /// `M_INVALID_USERNAME`: the user name has characters Matrix does not allow.
    InvalidUsername,
    /// `M_LIMIT_EXCEEDED`: too many requests.
    LimitExceeded,
    /// `M_MISSING_PARAM`: a required parameter is absent.
    MissingParam,
    /// `M_MISSING_TOKEN`: no access token.
    MissingToken,
    /// `M_NOT_FOUND`: no such thing.
    NotFound,
    /// `M_NOT_JSON`: the body is not JSON.
    NotJson,
    /// `M_NOT_YET_UPLOADED`: the media id was created but has no content yet.
    NotYetUploaded,
    /// `M_ROOM_IN_USE`: the room alias is taken.
    RoomInUse,
    /// `M_TOO_LARGE`: the request or an event is over a size limit.
    TooLarge,
    /// `M_UNAUTHORIZED`: a server request without a valid signature.
    Unauthorized,
    /// `M_UNKNOWN`: no specific code applies.
    Unknown,
    /// `M_UNKNOWN_POS`: a sliding sync position the server no longer knows.
    UnknownPos,
    /// `M_UNKNOWN_TOKEN`: the access token is not (or no longer) valid.
    UnknownToken,
    /// `M_UNRECOGNIZED`: no such endpoint or method.
    Unrecognized,
    /// `M_UNSUPPORTED_ROOM_VERSION`: a room version this server does not implement.
    UnsupportedRoomVersion,
    /// `M_USER_DEACTIVATED`: the account is deactivated.
    UserDeactivated,
    /// `M_USER_IN_USE`: the user name is taken.
    UserInUse,
    /// `M_WEAK_PASSWORD`: the password is too weak.
    WeakPassword,
    /// `M_WRONG_ROOM_KEYS_VERSION`: the key backup version is not the current one.
    WrongRoomKeysVersion,
}

impl ErrorCode {
    /// The code as the specification spells it, e.g. `M_FORBIDDEN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "M_BAD_JSON",
            Self::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            Self::DuplicateAnnotation => "M_DUPLICATE_ANNOTATION",
            Self::Forbidden => "M_FORBIDDEN",
            Self::IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::InvalidSignature => "M_INVALID_SIGNATURE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::LimitExceeded => "M_LIMIT_EXCEEDED",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::NotFound => "M_NOT_FOUND",
            Self::NotJson => "M_NOT_JSON",
            Self::NotYetUploaded => "M_NOT_YET_UPLOADED",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::TooLarge => "M_TOO_LARGE",
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::Unknown => "M_UNKNOWN",
            Self::UnknownPos => "M_UNKNOWN_POS",
            Self::UnknownToken => "M_UNKNOWN_TOKEN",
            Self::Unrecognized => "M_UNRECOGNIZED",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::UserInUse => "M_USER_IN_USE",
            Self::WeakPassword => "M_WEAK_PASSWORD",
            Self::WrongRoomKeysVersion => "M_WRONG_ROOM_KEYS_VERSION",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A Matrix error as the client-server API defines it: an HTTP status, an `errcode`
/// and a human-readable `error`, plus optional extra fields (UIA flows, retry hints).
#[derive(Debug)]
pub struct MatrixError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// The `errcode`, e.g. [`ErrorCode::Forbidden`].
    pub errcode: ErrorCode,
    /// The human-readable message.
    pub message: String,
    /// Extra top-level fields merged into the body (used by user-interactive auth).
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// Extra response headers (e.g. `Retry-After`).
    pub headers: Option<Box<axum::http::HeaderMap>>,
}

impl MatrixError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, errcode: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            extra: None,
            headers: None,
        }
    }

    /// `403 M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// `404 M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// `400 M_BAD_JSON`: the body is JSON but not of the right shape.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadJson, message)
    }

    /// `400 M_NOT_JSON`: the body is not JSON at all.
    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::NotJson, message)
    }

    /// `400 M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidParam, message)
    }

    /// `400 M_MISSING_PARAM`.
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::MissingParam, message)
    }

    /// `400 M_UNKNOWN` for a request that is wrong in a way no specific code covers.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::Unknown, message)
    }

    /// `404 M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unrecognized,
            "Unrecognized request",
        )
    }

    /// `500 M_UNKNOWN`: an internal fault. The details go to the log, not the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unknown,
            "Internal server error",
        )
    }

    /// Adds a response header.
    pub fn with_header(
        mut self,
        name: axum::http::HeaderName,
        value: axum::http::HeaderValue,
    ) -> Self {
        self.headers
            .get_or_insert_with(Default::default)
            .insert(name, value);
        self
    }

    /// Adds an extra top-level field to the error body.
    pub fn with_field(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.message
        )
    }
}

impl std::error::Error for MatrixError {}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let mut body = self.extra.unwrap_or_default();
        body.insert("errcode".into(), json!(self.errcode));
        body.insert("error".into(), json!(self.message));
        let mut response =
            (self.status, axum::Json(serde_json::Value::Object(body))).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

/// Internal failures of the node's own machinery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite reported an error.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// A schema migration failed.
    #[error("database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// Reading or writing a file in the data directory failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Stored JSON could not be read back.
    #[error("stored json: {0}")]
    Json(#[from] serde_json::Error),
    /// A background task died.
    #[error("task: {0}")]
    Task(String),
    /// The node's key file is unusable.
    #[error("signing key: {0}")]
    Key(String),
    /// The peer-to-peer network failed.
    #[error("network: {0}")]
    Network(String),
    /// Building or signing an event failed.
    #[error("event: {0}")]
    Event(String),
    /// A wrong user name or password at login. Clients see it as `403 M_FORBIDDEN`; it has
    /// its own variant so callers that are not HTTP clients can tell it from other refusals.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// A client-visible failure raised inside the storage or room layer.
    #[error("{0}")]
    Matrix(#[from] MatrixError),
}

impl From<Error> for MatrixError {
    fn from(err: Error) -> Self {
        match err {
            Error::Matrix(m) => m,
            Error::InvalidCredentials => MatrixError::forbidden("Invalid username or password"),
            other => {
                tracing::error!(error = %other, "internal error");
                MatrixError::internal()
            }
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Task(err.to_string())
    }
}

/// Result with the node's internal error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_body_carries_the_code_as_its_wire_string() {
        let response = MatrixError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UserInUse,
            "User ID already taken",
        )
        .with_field("extra", json!(1))
        .into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            json!({ "errcode": "M_USER_IN_USE", "error": "User ID already taken", "extra": 1 })
        );
    }

    #[test]
    fn display_uses_the_wire_string() {
        assert_eq!(ErrorCode::Forbidden.to_string(), "M_FORBIDDEN");
        assert_eq!(
            MatrixError::forbidden("no").to_string(),
            "403 M_FORBIDDEN: no"
        );
        assert_eq!(
            serde_json::to_value(ErrorCode::WrongRoomKeysVersion).unwrap(),
            json!("M_WRONG_ROOM_KEYS_VERSION")
        );
    }
}
