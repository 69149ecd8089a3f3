//! Presence of local users: online, unavailable or offline, with an optional status message.
//!
//! No timers: `last_active_ago` and `currently_active` are computed when asked, from the
//! stored time of last activity. A change of state or status message takes a stream position,
//! so syncs of the user and of everyone sharing a room with them see it once.

use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::{
    error::{MatrixError, Result},
    filter::EventFilter,
    notifier::Notifier,
    storage::{Db, accounts, now_ms, presence as store},
};

/// A user counts as currently active this long after their last activity.
const ACTIVE_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Activity seen by sync is written at most this often (it tells nobody).
const TOUCH_EVERY_MS: i64 = 60 * 1000;
/// Longest status message accepted.
const MAX_STATUS_MSG: usize = 1024;

/// The presence service.
#[derive(Clone)]
pub struct Presence {
    db: Db,
    notifier: Arc<Notifier>,
}

/// Checks a presence state name: `online`, `offline` or `unavailable`.
pub fn parse_state(state: &str) -> Result<&'static str> {
    match state {
        "online" => Ok("online"),
        "offline" => Ok("offline"),
        "unavailable" => Ok("unavailable"),
        _ => Err(
            MatrixError::invalid_param("presence must be online, offline or unavailable").into(),
        ),
    }
}

impl Presence {
    /// Creates the service.
    pub fn new(db: Db, notifier: Arc<Notifier>) -> Self {
        Self { db, notifier }
    }

    /// Sets the user's presence and status message (`PUT /presence/{userId}/status`).
    pub async fn set_status(
        &self,
        user: &str,
        state: &str,
        status_msg: Option<String>,
    ) -> Result<()> {
        let state = parse_state(state)?;
        if status_msg
            .as_ref()
            .is_some_and(|m| m.len() > MAX_STATUS_MSG)
        {
            return Err(MatrixError::bad_json("status_msg is too long").into());
        }
        let user = user.to_owned();
        self.db
            .write(move |txn| {
                let now = now_ms();
                let last_active = match store::get(txn, &user)? {
                    // Going offline keeps the time the user was last seen.
                    Some(p) if state == "offline" => p.last_active_ts.unwrap_or(now),
                    _ => now,
                };
                let pos = txn.next_pos();
                store::set(txn, &user, state, status_msg.as_deref(), last_active, pos)
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }

    /// The presence of `target` as `requester` may see it (`GET /presence/{userId}/status`):
    /// `404 M_NOT_FOUND` for users this server does not have, `403 M_FORBIDDEN` unless they
    /// share a room.
    pub async fn status(&self, requester: &str, target: &str) -> Result<Value> {
        let (req, target) = (requester.to_owned(), target.to_owned());
        let row = self
            .db
            .read(move |c| {
                if accounts::get_user(c, &target)?.is_none() {
                    return Err(MatrixError::not_found("Unknown user").into());
                }
                if req != target && !store::share_a_room(c, &req, &target)? {
                    return Err(
                        MatrixError::forbidden("You do not share a room with this user").into(),
                    );
                }
                store::get(c, &target)
            })
            .await?;
        let Some(row) = row else {
            return Ok(json!({ "presence": "offline" }));
        };
        let mut body = content(&row, now_ms());
        body.remove("displayname");
        body.remove("avatar_url");
        Ok(Value::Object(body))
    }

    /// Records what a sync's `set_presence` says: `online` (the default) marks an offline
    /// user online, `unavailable` marks them unavailable, `offline` changes nothing. Syncing
    /// does not override an `unavailable` the user set themselves.
    pub async fn on_sync(&self, user: &str, set_presence: Option<&str>) -> Result<()> {
        let wanted = parse_state(set_presence.unwrap_or("online"))?;
        if wanted == "offline" {
            return Ok(());
        }
        let u = user.to_owned();
        let current = self.db.read(move |c| store::get(c, &u)).await?;
        let now = now_ms();
        let change = match &current {
            None => true,
            Some(p) if wanted == "online" => p.state == "offline",
            Some(p) => p.state != wanted,
        };
        let user = user.to_owned();
        if change {
            let status = current.and_then(|p| p.status_msg);
            self.db
                .write(move |txn| {
                    let pos = txn.next_pos();
                    store::set(txn, &user, wanted, status.as_deref(), now, pos)
                })
                .await?;
            self.notifier.notify();
        } else if current.is_some_and(|p| p.last_active_ts.is_none_or(|t| now - t > TOUCH_EVERY_MS))
        {
            self.db
                .write(move |txn| store::touch(txn, &user, now))
                .await?;
        }
        Ok(())
    }
}

/// The content of an `m.presence` event.
fn content(row: &store::PresenceRow, now: i64) -> Map<String, Value> {
    let ago = row.last_active_ts.map(|t| (now - t).max(0));
    let mut c = Map::new();
    c.insert("presence".into(), json!(row.state));
    if let Some(ago) = ago {
        c.insert("last_active_ago".into(), json!(ago));
    }
    c.insert(
        "currently_active".into(),
        json!(row.state == "online" && ago.is_some_and(|a| a < ACTIVE_WINDOW_MS)),
    );
    if let Some(m) = &row.status_msg {
        c.insert("status_msg".into(), json!(m));
    }
    if let Some(n) = &row.displayname {
        c.insert("displayname".into(), json!(n));
    }
    if let Some(a) = &row.avatar_url {
        c.insert("avatar_url".into(), json!(a));
    }
    c
}

/// The `m.presence` events a sync after `since` carries for `user`: their own and those of
/// users sharing a joined room with them, changed since then.
pub fn sync_events(
    conn: &Connection,
    user: &str,
    since: i64,
    now: i64,
    filter: &EventFilter,
) -> Result<Vec<Value>> {
    if !filter.allows_type("m.presence") {
        return Ok(Vec::new());
    }
    let limit = filter.limit.map_or(usize::MAX, |l| l as usize);
    Ok(store::changed_for(conn, user, since)?
        .into_iter()
        .filter(|p| {
            filter
                .senders
                .as_ref()
                .is_none_or(|s| s.contains(&p.user_id))
                && !filter.not_senders.contains(&p.user_id)
        })
        .take(limit)
        .map(|p| {
            json!({
                "type": "m.presence",
                "sender": p.user_id,
                "content": content(&p, now),
            })
        })
        .collect())
}
