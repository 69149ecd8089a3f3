//! Presence: online, unavailable or offline, with an optional status message.
//!
//! No timers: `last_active_ago` and `currently_active` are computed when asked, from the
//! stored time of last activity. A change of state or status message takes a stream position,
//! so syncs of the user and of everyone sharing a room with them see it once. The change also
//! goes, as an `m.presence` EDU in the outbox, to every other server sharing a room with the
//! user; what other servers send of their users is kept apart and shown the same way. Activity
//! alone (a sync) is not sent: a phone does not wake its peers to say it is still there.

use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::e2ee::remote::server_of;
use crate::{
    error::{MatrixError, Result},
    filter::EventFilter,
    notifier::Notifier,
    storage::{Db, accounts, federation_e2ee::enqueue_edu, now_ms, presence as store},
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
    server_name: Arc<str>,
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
    /// Creates the service for the server `server_name`.
    pub fn new(db: Db, notifier: Arc<Notifier>, server_name: &str) -> Self {
        Self {
            db,
            notifier,
            server_name: server_name.into(),
        }
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
        let local = self.server_name.clone();
        self.db
            .write(move |txn| {
                let now = now_ms();
                let last_active = match store::get(txn, &user)? {
                    // Going offline keeps the time the user was last seen.
                    Some(p) if state == "offline" => p.last_active_ts.unwrap_or(now),
                    _ => now,
                };
                let pos = txn.next_pos();
                store::set(txn, &user, state, status_msg.as_deref(), last_active, pos)?;
                tell_other_servers(txn, &user, &local)
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
        let local = is_local(&target, &self.server_name);
        let row = self
            .db
            .read(move |c| {
                if local && accounts::get_user(c, &target)?.is_none() {
                    return Err(MatrixError::not_found("Unknown user").into());
                }
                if req != target && !store::share_a_room(c, &req, &target)? {
                    return Err(
                        MatrixError::forbidden("You do not share a room with this user").into(),
                    );
                }
                if local {
                    store::get(c, &target)
                } else {
                    store::get_remote(c, &target)
                }
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
            let local = self.server_name.clone();
            self.db
                .write(move |txn| {
                    let pos = txn.next_pos();
                    store::set(txn, &user, wanted, status.as_deref(), now, pos)?;
                    tell_other_servers(txn, &user, &local)
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

    /// Sends the presence of this server's members of `room_id` to the room's other servers,
    /// after a join: a new room-mate hears about presence that did not change since.
    pub async fn share_room(&self, room_id: &str) {
        let (room, local) = (room_id.to_owned(), self.server_name.clone());
        let queued = self
            .db
            .write(move |txn| {
                let servers: Vec<String> = crate::storage::federation::servers_in_room(txn, &room)?
                    .into_iter()
                    .filter(|s| *s != *local)
                    .collect();
                let now = now_ms();
                let push: Vec<Value> = store::local_members_with_presence(txn, &room, &local)?
                    .iter()
                    .map(|row| Value::Object(edu_entry(row, now)))
                    .collect();
                if servers.is_empty() || push.is_empty() {
                    return Ok(false);
                }
                let edu =
                    json!({ "edu_type": "m.presence", "content": { "push": push } }).to_string();
                for server in servers {
                    enqueue_edu(txn, &server, &edu)?;
                }
                Ok(true)
            })
            .await;
        match queued {
            Ok(true) => self.notifier.notify(),
            Ok(false) => {}
            Err(e) => tracing::warn!(room = %room_id, error = %e, "could not share presence"),
        }
    }

    /// Applies an `m.presence` EDU from `origin`: each entry about one of `origin`'s users
    /// who is in a room this server knows is stored, and syncs of room-mates see it. Entries
    /// about anyone else, or malformed ones, are dropped.
    pub async fn receive_remote(&self, origin: &str, content: &Value) {
        let Some(push) = content["push"].as_array() else {
            return;
        };
        let now = now_ms();
        let mut updates = Vec::new();
        for entry in push.iter().take(MAX_REMOTE_UPDATES) {
            let Some(user) = entry["user_id"].as_str() else {
                continue;
            };
            if !is_local(user, origin) {
                continue;
            }
            let Some(Ok(state)) = entry["presence"].as_str().map(parse_state) else {
                continue;
            };
            let status = entry["status_msg"]
                .as_str()
                .filter(|m| m.len() <= MAX_STATUS_MSG)
                .map(str::to_owned);
            let last_active = entry["last_active_ago"]
                .as_i64()
                .filter(|ago| *ago >= 0)
                .map(|ago| now.saturating_sub(ago));
            updates.push((user.to_owned(), state, status, last_active));
        }
        if updates.is_empty() {
            return;
        }
        let stored = self
            .db
            .write(move |txn| {
                let mut any = false;
                for (user, state, status, last_active) in &updates {
                    if store::is_joined_somewhere(txn, user)? {
                        let pos = txn.next_pos();
                        store::set_remote(txn, user, state, status.as_deref(), *last_active, pos)?;
                        any = true;
                    }
                }
                Ok(any)
            })
            .await;
        match stored {
            Ok(true) => self.notifier.notify(),
            Ok(false) => {}
            Err(e) => tracing::warn!(%origin, error = %e, "could not store presence"),
        }
    }
}

/// Most entries taken from one `m.presence` EDU.
const MAX_REMOTE_UPDATES: usize = 100;

/// Whether `user` belongs to `server`.
fn is_local(user: &str, server: &str) -> bool {
    server_of(user) == Some(server)
}

/// Queues the user's current presence for every other server sharing a room with them.
fn tell_other_servers(txn: &Connection, user: &str, local: &str) -> Result<()> {
    let servers = store::servers_sharing_rooms(txn, user, local)?;
    if servers.is_empty() {
        return Ok(());
    }
    let Some(row) = store::get(txn, user)? else {
        return Ok(());
    };
    let entry = edu_entry(&row, now_ms());
    let edu = json!({ "edu_type": "m.presence", "content": { "push": [entry] } }).to_string();
    for server in servers {
        enqueue_edu(txn, &server, &edu)?;
    }
    Ok(())
}

/// One user's entry in an `m.presence` EDU.
fn edu_entry(row: &store::PresenceRow, now: i64) -> Map<String, Value> {
    let mut entry = content(row, now);
    entry.remove("displayname");
    entry.remove("avatar_url");
    entry.insert("user_id".into(), json!(row.user_id));
    entry
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
