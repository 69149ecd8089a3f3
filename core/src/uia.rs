//! User-interactive authentication: the 401 challenge with flows and a session id.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    accounts::random_string,
    error::{ErrorCode, MatrixError},
};

/// How long an unfinished UIA session is remembered.
const SESSION_TTL: Duration = Duration::from_secs(15 * 60);
/// Most unfinished UIA sessions remembered at once; a new one past that pushes out the oldest.
/// Any app can open sessions without an account (`POST /register`), so the map is bounded.
pub const MAX_SESSIONS: usize = 256;

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
pub struct Uia {
    sessions: Mutex<HashMap<String, Instant>>,
    max_sessions: usize,
}

impl Default for Uia {
    fn default() -> Self {
        Self::with_capacity(MAX_SESSIONS)
    }
}

impl Uia {
    /// Sessions bounded to `max_sessions` at once.
    pub fn with_capacity(max_sessions: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max_sessions: max_sessions.max(1),
        }
    }

    /// The 401 challenge for a single-stage flow, optionally carrying an error.
    pub fn challenge(
        &self,
        stage: &str,
        session: Option<&str>,
        error: Option<(ErrorCode, &str)>,
    ) -> MatrixError {
        let session = match session {
            Some(s) if self.known(s) => s.to_owned(),
            _ => self.new_session(),
        };
        let (code, msg) = error.unwrap_or((
            ErrorCode::Forbidden,
            "Additional authentication is required",
        ));
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
        let mut s = self.lock();
        let now = Instant::now();
        s.retain(|_, t| now.duration_since(*t) < SESSION_TTL);
        while s.len() >= self.max_sessions {
            let Some(oldest) = s.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) else {
                break;
            };
            s.remove(&oldest);
        }
        s.insert(id.clone(), now);
        id
    }

    fn known(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|t| t.elapsed() < SESSION_TTL)
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // The map holds no invariant a panic could break half-way.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets a completed session.
    pub fn finish(&self, id: Option<&str>) {
        if let Some(id) = id {
            self.lock().remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_of(err: &MatrixError) -> String {
        err.extra.as_ref().unwrap()["session"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_go_first() {
        let uia = Uia::with_capacity(8);
        let first = session_of(&uia.challenge("m.login.dummy", None, None));
        let mut ids = vec![first.clone()];
        for _ in 0..100 {
            ids.push(session_of(&uia.challenge("m.login.dummy", None, None)));
        }
        assert_eq!(uia.len(), 8);
        // The oldest was pushed out: naming it now opens a new session.
        assert_ne!(
            session_of(&uia.challenge("m.login.dummy", Some(&first), None)),
            first
        );
        // The newest is still known and kept.
        let newest = ids.last().unwrap().clone();
        assert_eq!(
            session_of(&uia.challenge("m.login.dummy", Some(&newest), None)),
            newest
        );
        assert_eq!(uia.len(), 8);
    }
}
