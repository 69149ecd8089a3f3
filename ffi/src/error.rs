//! The one error type every fallible call returns.

use neurite_core::{Error as CoreError, ErrorCode};

/// Why a call failed. Swift sees it as an `Error` enum, Kotlin as an exception class per
/// variant, Python as exception subclasses.
///
/// Exported flat: each variant reaches the app as its name plus this type's `Display` text
/// (Kotlin's `Throwable.message`, Swift's `message:` associated value), so the app gets
/// one readable message whatever the variant.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum NeuriteError {
    /// A field of [`crate::HomeserverConfig`] (or an argument) is unusable.
    #[error("invalid configuration: {message}")]
    InvalidConfig { message: String },
    /// `start()` on a running homeserver.
    #[error("the homeserver is already running")]
    AlreadyRunning,
    /// A call that needs a running homeserver while it is stopped.
    #[error("the homeserver is not running")]
    NotRunning,
    /// The database, the key file or the data directory failed.
    #[error("storage: {message}")]
    Storage { message: String },
    /// The peer-to-peer network or the client listener failed.
    #[error("network: {message}")]
    Network { message: String },
    /// The user name is taken.
    #[error("user exists: {message}")]
    UserExists { message: String },
    /// The user name has characters Matrix does not allow (a-z, 0-9, `.` `_` `=` `-` `/` `+`).
    #[error("invalid username: {message}")]
    InvalidUsername { message: String },
    /// Wrong user name or password.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The homeserver refused the call for another reason than the credentials (for example
    /// a deactivated account); the message says why.
    #[error("forbidden: {message}")]
    Forbidden { message: String },
    /// Anything else; the message says what.
    #[error("internal: {message}")]
    Internal { message: String },
}

impl NeuriteError {
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal {
            message: message.into(),
        }
    }

    pub(crate) fn invalid_config(message: impl Into<String>) -> Self {
        Self::InvalidConfig {
            message: message.into(),
        }
    }
}

impl From<CoreError> for NeuriteError {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::Database(_) | CoreError::Migration(_) | CoreError::Json(_) => {
                Self::Storage {
                    message: err.to_string(),
                }
            }
            CoreError::Io(e) if e.kind() == std::io::ErrorKind::AddrInUse => Self::Network {
                message: e.to_string(),
            },
            CoreError::Io(_) | CoreError::Key(_) => Self::Storage {
                message: err.to_string(),
            },
            CoreError::Network(message) => Self::Network { message },
            CoreError::InvalidCredentials => Self::InvalidCredentials,
            CoreError::Matrix(m) => match m.errcode {
                ErrorCode::UserInUse => Self::UserExists { message: m.message },
                ErrorCode::InvalidUsername => Self::InvalidUsername { message: m.message },
                ErrorCode::Forbidden | ErrorCode::UserDeactivated => {
                    Self::Forbidden { message: m.message }
                }
                _ => Self::internal(m.to_string()),
            },
            other => Self::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use neurite_core::MatrixError;

    use super::*;

    fn matrix(errcode: ErrorCode, message: &str) -> CoreError {
        let mut err = MatrixError::forbidden(message);
        err.errcode = errcode;
        err.into()
    }

    #[test]
    fn only_wrong_credentials_are_invalid_credentials() {
        assert!(matches!(
            NeuriteError::from(CoreError::InvalidCredentials),
            NeuriteError::InvalidCredentials
        ));
        match NeuriteError::from(matrix(ErrorCode::Forbidden, "not a member")) {
            NeuriteError::Forbidden { message } => assert_eq!(message, "not a member"),
            other => panic!("expected Forbidden, got {other:?}"),
        }
        assert!(matches!(
            NeuriteError::from(matrix(ErrorCode::UserDeactivated, "Account deactivated")),
            NeuriteError::Forbidden { .. }
        ));
    }

    #[test]
    fn codes_map_by_variant() {
        assert!(matches!(
            NeuriteError::from(matrix(ErrorCode::UserInUse, "taken")),
            NeuriteError::UserExists { message } if message == "taken"
        ));
        assert!(matches!(
            NeuriteError::from(matrix(ErrorCode::InvalidUsername, "bad")),
            NeuriteError::InvalidUsername { message } if message == "bad"
        ));
        match NeuriteError::from(matrix(ErrorCode::TooLarge, "big")) {
            NeuriteError::Internal { message } => assert!(message.contains("M_TOO_LARGE")),
            other => panic!("expected Internal, got {other:?}"),
        }
    }
}
