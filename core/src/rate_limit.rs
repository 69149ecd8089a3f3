//! Rate limits on what a local app could repeat as fast as it likes: password checks and
//! registration. Token buckets in memory; the per-user map is bounded.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderValue, StatusCode, header};

use crate::{
    config::{RateLimit, RateLimits},
    error::{ErrorCode, MatrixError},
};

/// Most users whose password attempts are tracked at once. Past that, buckets that are full
/// again (which hold no information) go first, then the longest untouched.
pub const MAX_TRACKED_USERS: usize = 1024;

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            updated: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let earned = now.duration_since(self.updated).as_secs_f64()
            / limit.every.as_secs_f64().max(f64::MIN_POSITIVE);
        self.tokens = (self.tokens + earned).min(f64::from(limit.burst));
        self.updated = now;
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(limit.every.mul_f64(missing).max(Duration::from_millis(1)))
        }
    }

    fn give_back(&mut self, limit: RateLimit) {
        self.tokens = (self.tokens + 1.0).min(f64::from(limit.burst));
    }

    fn is_full(&self, limit: RateLimit, now: Instant) -> bool {
        let mut b = *self;
        b.refill(limit, now);
        b.tokens >= f64::from(limit.burst)
    }
}

/// The node's rate limiters.
pub struct Limiter {
    limits: RateLimits,
    password_global: Mutex<Bucket>,
    registration: Mutex<Bucket>,
    password_users: Mutex<HashMap<String, Bucket>>,
    max_users: usize,
}

impl Limiter {
    /// Limiters with every bucket full.
    pub fn new(limits: RateLimits) -> Self {
        Self::with_capacity(limits, MAX_TRACKED_USERS)
    }

    /// Limiters tracking at most `max_users` users' password attempts.
    pub fn with_capacity(limits: RateLimits, max_users: usize) -> Self {
        let now = Instant::now();
        Self {
            limits,
            password_global: Mutex::new(Bucket::full(limits.password_global, now)),
            registration: Mutex::new(Bucket::full(limits.registration, now)),
            password_users: Mutex::new(HashMap::new()),
            max_users: max_users.max(1),
        }
    }

    /// Before checking a password of `user` (a user id, or whatever a login named): takes one
    /// attempt from the user's bucket and from the node's. `429 M_LIMIT_EXCEEDED` if either is
    /// empty. A correct password should hand the user's attempt back with
    /// [`Limiter::password_ok`].
    pub fn password_attempt(&self, user: &str) -> Result<(), MatrixError> {
        let now = Instant::now();
        let per_user = self.limits.password_per_user;
        {
            let mut users = lock(&self.password_users);
            if !users.contains_key(user) && users.len() >= self.max_users {
                evict(&mut users, per_user, now, self.max_users);
            }
            let bucket = users
                .entry(user.to_owned())
                .or_insert_with(|| Bucket::full(per_user, now));
            bucket.take(per_user, now).map_err(limit_exceeded)?;
        }
        let global = lock(&self.password_global).take(self.limits.password_global, now);
        if let Err(wait) = global {
            // The user's attempt was not spent on a check.
            if let Some(b) = lock(&self.password_users).get_mut(user) {
                b.give_back(per_user);
            }
            return Err(limit_exceeded(wait));
        }
        Ok(())
    }

    /// The password of `user` was right: the attempt does not count against them.
    pub fn password_ok(&self, user: &str) {
        let per_user = self.limits.password_per_user;
        if let Some(b) = lock(&self.password_users).get_mut(user) {
            b.give_back(per_user);
        }
    }

    /// Before a registration attempt or a registration token check.
    pub fn registration_attempt(&self) -> Result<(), MatrixError> {
        lock(&self.registration)
            .take(self.limits.registration, Instant::now())
            .map_err(limit_exceeded)
    }

    /// How many users' attempts are tracked (for tests).
    pub fn tracked_users(&self) -> usize {
        lock(&self.password_users).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A bucket holds no invariant a panic could break half-way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes room for one more user: drops the buckets that are full again (they hold nothing a
/// fresh bucket would not), and if none is, the one untouched for longest.
fn evict(users: &mut HashMap<String, Bucket>, limit: RateLimit, now: Instant, max: usize) {
    users.retain(|_, b| !b.is_full(limit, now));
    while users.len() >= max {
        let Some(oldest) = users
            .iter()
            .min_by_key(|(_, b)| b.updated)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        users.remove(&oldest);
    }
}

/// `429 M_LIMIT_EXCEEDED` with `retry_after_ms` (and the `Retry-After` header, in seconds).
pub fn limit_exceeded(wait: Duration) -> MatrixError {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    MatrixError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::LimitExceeded,
        "Too many attempts; try again later",
    )
    .with_field("retry_after_ms", serde_json::json!(ms))
    .with_header(
        header::RETRY_AFTER,
        HeaderValue::from(ms.div_ceil(1000).max(1)),
    )
}
