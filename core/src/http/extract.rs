//! Extractors with Matrix errors as their rejections: a JSON body, an optional one, path and
//! query parameters.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::{ErrorCode, MatrixError};

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
