//! User-interactive authentication: the 401 challenge with flows and a session id.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{accounts::random_string, error::MatrixError};

/// How long an unfinished UIA session is remembered.
const SESSION_TTL: Duration = Duration::from_secs(15 * 60);

/// The `auth` object of a request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthData {
    /// Stage type, e.g. `m.login.dummy`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Session id from the 401 challenge.
    pub session: Option<String>,
    /// Registration token (`m.login.registration_token`).
    pub token: Option<String>,
    /// Password (`m.login.password`).
    pub password: Option<String>,
    /// Identifier (`m.login.password`).
    pub identifier: Option<Value>,
    /// Legacy user field (`m.login.password`).
    pub user: Option<String>,
}

/// Open UIA sessions.
#[derive(Default)]
pub struct Uia {
    sessions: Mutex<HashMap<String, Instant>>,
}

impl Uia {
    /// The 401 challenge for a single-stage flow, optionally carrying an error.
    pub fn challenge(
        &self,
        stage: &str,
        session: Option<&str>,
        error: Option<(&'static str, &str)>,
    ) -> MatrixError {
        let session = match session {
            Some(s) if self.known(s) => s.to_owned(),
            _ => self.new_session(),
        };
        let (code, msg) = error.unwrap_or(("M_FORBIDDEN", "Additional authentication is required"));
        let mut err = MatrixError::new(StatusCode::UNAUTHORIZED, code, msg)
            .with_field("flows", json!([{ "stages": [stage] }]))
            .with_field("params", json!({}))
            .with_field("session", json!(session));
        if error.is_some() {
            // A failed attempt: nothing of the flow is complete.
            err = err.with_field("completed", json!([]));
        }
        err
    }

    fn new_session(&self) -> String {
        let id = random_string(24);
        if let Ok(mut s) = self.sessions.lock() {
            let now = Instant::now();
            s.retain(|_, t| now.duration_since(*t) < SESSION_TTL);
            s.insert(id.clone(), now);
        }
        id
    }

    fn known(&self, id: &str) -> bool {
        self.sessions
            .lock()
            .map(|s| s.contains_key(id))
            .unwrap_or(false)
    }

    /// Forgets a completed session.
    pub fn finish(&self, id: Option<&str>) {
        if let (Some(id), Ok(mut s)) = (id, self.sessions.lock()) {
            s.remove(id);
        }
    }
}
