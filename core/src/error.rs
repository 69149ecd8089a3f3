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

/// A Matrix error as the client-server API defines it: an HTTP status, an `errcode`
/// and a human-readable `error`, plus optional extra fields (UIA flows, retry hints).
#[derive(Debug)]
pub struct MatrixError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// The `errcode`, e.g. `M_FORBIDDEN`.
    pub errcode: &'static str,
    /// The human-readable message.
    pub message: String,
    /// Extra top-level fields merged into the body (used by user-interactive auth).
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// Extra response headers (e.g. `Retry-After`).
    pub headers: Option<Box<axum::http::HeaderMap>>,
}

impl MatrixError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
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
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    /// `404 M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    /// `400 M_BAD_JSON`: the body is JSON but not of the right shape.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }

    /// `400 M_NOT_JSON`: the body is not JSON at all.
    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", message)
    }

    /// `400 M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    /// `400 M_MISSING_PARAM`.
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", message)
    }

    /// `400 M_UNKNOWN` for a request that is wrong in a way no specific code covers.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", message)
    }

    /// `404 M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// `500 M_UNKNOWN`: an internal fault. The details go to the log, not the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
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
    /// A client-visible failure raised inside the storage or room layer.
    #[error("{0}")]
    Matrix(#[from] MatrixError),
}

impl From<Error> for MatrixError {
    fn from(err: Error) -> Self {
        match err {
            Error::Matrix(m) => m,
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
