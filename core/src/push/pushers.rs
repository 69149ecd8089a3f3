//! Pushers and notifications: the pushers clients register, the `/notifications` list, and
//! the unread counts of `/sync`, all read from what [`super::evaluation`] records.

use std::collections::BTreeMap;

use ruma::UserId;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::PushRules;
use crate::{
    error::Result,
    storage::{events as ev_store, now_ms, push as store, pushers as pusher_store},
};

/// A page of `/notifications`.
#[derive(Debug, Default)]
pub struct NotificationPage {
    /// The notifications, newest first, in the client format of the endpoint.
    pub notifications: Vec<Value>,
    /// Where the next page starts, if there may be one.
    pub next_token: Option<String>,
}

impl PushRules {
    /// A user's pushers.
    pub async fn pushers(&self, user: &UserId) -> Result<Vec<pusher_store::PusherRow>> {
        let user = user.to_string();
        self.db.read(move |c| pusher_store::list(c, &user)).await
    }

    /// Creates or replaces a pusher, owned by the device `pusher.device_id`.
    pub async fn set_pusher(
        &self,
        user: &UserId,
        pusher: pusher_store::PusherRow,
        append: bool,
    ) -> Result<()> {
        let user = user.to_string();
        self.db
            .write(move |txn| pusher_store::set(txn, &user, &pusher, append, now_ms()))
            .await
    }

    /// Deletes a pusher; deleting one that does not exist is not an error.
    pub async fn delete_pusher(&self, user: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
        let (user, app_id, pushkey) = (user.to_string(), app_id.to_owned(), pushkey.to_owned());
        self.db
            .write(move |txn| pusher_store::delete(txn, &user, &app_id, &pushkey).map(|_| ()))
            .await
    }

    /// A page of a user's notifications, newest first, before the `from` token.
    pub async fn notifications(
        &self,
        user: &UserId,
        device: &str,
        from: Option<i64>,
        only_highlight: bool,
        limit: usize,
    ) -> Result<NotificationPage> {
        let (user, device) = (user.to_string(), device.to_owned());
        self.db
            .read(move |conn| {
                let rows = pusher_store::notifications(conn, &user, from, only_highlight, limit)?;
                let now = now_ms();
                let viewer = crate::rooms::format::Viewer {
                    user_id: &user,
                    device_id: Some(&device),
                };
                let mut page = NotificationPage {
                    next_token: (rows.len() == limit)
                        .then(|| rows.last().map(|r| r.stream.to_string()))
                        .flatten(),
                    ..Default::default()
                };
                for row in rows {
                    let Some(ev) = ev_store::get_event(conn, &row.event_id)? else {
                        continue;
                    };
                    let event = crate::rooms::format::client_event(conn, &ev, Some(viewer), now)?;
                    let actions: Value =
                        serde_json::from_str(&row.actions).unwrap_or_else(|_| json!([]));
                    page.notifications.push(json!({
                        "actions": actions,
                        "event": event,
                        "read": row.read,
                        "room_id": row.room_id,
                        "ts": row.ts,
                    }));
                }
                Ok(page)
            })
            .await
    }
}

/// Unread counts of one room for `/sync`.
#[derive(Debug, Default, Clone)]
pub struct UnreadCounts {
    /// `(notification_count, highlight_count)` of the main timeline, or of the whole room
    /// when threads are not counted apart.
    pub room: (u64, u64),
    /// Per thread root, when the client asked for threads apart.
    pub threads: BTreeMap<String, (u64, u64)>,
}

/// A user's unread counts in a room; with `by_thread`, threads are counted apart from the
/// main timeline.
pub fn unread_counts(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    by_thread: bool,
) -> Result<UnreadCounts> {
    let mut out = UnreadCounts::default();
    for (thread, n, h) in store::counts(conn, user_id, room_id)? {
        if by_thread && !thread.is_empty() {
            out.threads.insert(thread, (n, h));
        } else {
            out.room.0 += n;
            out.room.1 += h;
        }
    }
    Ok(out)
}
