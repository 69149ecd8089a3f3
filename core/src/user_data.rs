//! Per-user data: profile, account data, receipts and read markers, stored filters.

use std::sync::Arc;

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::{
    error::{ErrorCode, MatrixError, Result},
    filter::Filter,
    notifier::Notifier,
    rooms::{EventTemplate, Rooms},
    storage::{Db, accounts, events as ev_store, now_ms, push as push_store, user_data as store},
};

/// The user-data service.
#[derive(Clone)]
pub struct UserData {
    db: Db,
    notifier: Arc<Notifier>,
    rooms: Rooms,
}

impl UserData {
    /// Creates the service.
    pub fn new(db: Db, notifier: Arc<Notifier>, rooms: Rooms) -> Self {
        Self {
            db,
            notifier,
            rooms,
        }
    }

    /// Sets a piece of account data (`room_id` None for global).
    pub async fn set_account_data(
        &self,
        user: &str,
        room_id: Option<&str>,
        ty: &str,
        content: &Value,
    ) -> Result<()> {
        if matches!(ty, "m.fully_read" | "m.push_rules") {
            return Err(MatrixError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::BadJson,
                format!("{ty} cannot be set through account data"),
            )
            .into());
        }
        self.store_account_data(user, room_id, ty, content).await
    }

    async fn store_account_data(
        &self,
        user: &str,
        room_id: Option<&str>,
        ty: &str,
        content: &Value,
    ) -> Result<()> {
        let (user, room, ty, content) = (
            user.to_owned(),
            room_id.unwrap_or("").to_owned(),
            ty.to_owned(),
            serde_json::to_string(content)?,
        );
        self.db
            .write(move |txn| {
                let pos = txn.next_pos();
                store::set_account_data(txn, &user, &room, &ty, &content, pos)
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }

    /// Gets a piece of account data; `404 M_NOT_FOUND` if unset.
    pub async fn account_data(&self, user: &str, room_id: Option<&str>, ty: &str) -> Result<Value> {
        let (user, room, ty) = (
            user.to_owned(),
            room_id.unwrap_or("").to_owned(),
            ty.to_owned(),
        );
        let found = self
            .db
            .read(move |c| {
                let found = store::get_account_data(c, &user, &room, &ty)?;
                if found.is_none() && room.is_empty() && ty == push_store::PUSH_RULES_TYPE {
                    // Push rules exist for everyone: the server defaults until first changed.
                    if let Ok(user) = ruma::UserId::parse(&user) {
                        let rules = crate::push::account_data_content(&user, None);
                        return Ok(Some(serde_json::to_string(&rules)?));
                    }
                }
                Ok(found)
            })
            .await?;
        let json = found.ok_or_else(|| MatrixError::not_found("Account data not found"))?;
        Ok(serde_json::from_str(&json)?)
    }

    /// The `m.tag` tags of a room for a user (`{}` if none).
    pub async fn tags(&self, user: &str, room_id: &str) -> Result<Value> {
        let (u, r) = (user.to_owned(), room_id.to_owned());
        let found = self
            .db
            .read(move |c| store::get_account_data(c, &u, &r, "m.tag"))
            .await?;
        Ok(tags_of(found.as_deref()))
    }

    /// Sets (`Some(content)`) or removes (`None`) one tag in the room's `m.tag` account data.
    pub async fn set_tag(
        &self,
        user: &str,
        room_id: &str,
        tag: &str,
        content: Option<Value>,
    ) -> Result<()> {
        let (u, r, t) = (user.to_owned(), room_id.to_owned(), tag.to_owned());
        self.db
            .write(move |txn| {
                let current = store::get_account_data(txn, &u, &r, "m.tag")?;
                let mut tags = match tags_of(current.as_deref()) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                match content {
                    Some(c) => tags.insert(t, c),
                    None => tags.remove(&t),
                };
                let json = serde_json::to_string(&json!({ "tags": tags }))?;
                let pos = txn.next_pos();
                store::set_account_data(txn, &u, &r, "m.tag", &json, pos)
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }

    /// Records a read receipt or the fully-read marker.
    pub async fn set_read_marker(
        &self,
        user: &str,
        room_id: &str,
        ty: &str,
        event_id: &str,
        thread_id: Option<&str>,
    ) -> Result<()> {
        if let Some(t) = thread_id
            && t != "main"
            && !t.starts_with('$')
        {
            return Err(MatrixError::invalid_param(
                "thread_id must be \"main\" or the event id of a thread root",
            )
            .into());
        }
        self.rooms.require_joined(room_id, user).await?;
        let (r, e) = (room_id.to_owned(), event_id.to_owned());
        let known = self
            .db
            .read(move |c| Ok(ev_store::get_event(c, &e)?.is_some_and(|ev| ev.room_id == r)))
            .await?;
        if !known {
            return Err(MatrixError::not_found("Event not found in this room").into());
        }
        if ty == "m.fully_read" {
            return self
                .store_account_data(user, Some(room_id), ty, &json!({ "event_id": event_id }))
                .await;
        }
        let receipt = store::Receipt {
            user_id: user.to_owned(),
            receipt_type: ty.to_owned(),
            thread_id: thread_id.unwrap_or("").to_owned(),
            event_id: event_id.to_owned(),
            ts: now_ms(),
        };
        let room = room_id.to_owned();
        self.db
            .write(move |txn| {
                let pos = txn.next_pos();
                store::set_receipt(txn, &room, &receipt, pos)?;
                // Notifications up to the event are read: unthreaded receipts clear every
                // thread, threaded ones only theirs (`main` is the main timeline).
                if let Some(upto) =
                    ev_store::get_event(txn, &receipt.event_id)?.and_then(|ev| ev.stream)
                {
                    let scope = match receipt.thread_id.as_str() {
                        "" => push_store::ReceiptScope::All,
                        "main" => push_store::ReceiptScope::Thread(""),
                        root => push_store::ReceiptScope::Thread(root),
                    };
                    push_store::clear_upto(txn, &receipt.user_id, &room, scope, upto)?;
                    let thread = match scope {
                        push_store::ReceiptScope::All => None,
                        push_store::ReceiptScope::Thread(t) => Some(t),
                    };
                    crate::storage::pushers::mark_read(txn, &receipt.user_id, &room, thread, upto)?;
                }
                Ok(())
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }

    /// A user's profile: `(displayname, avatar_url)`; `404 M_NOT_FOUND` for unknown users.
    pub async fn profile(&self, user: &str) -> Result<(Option<String>, Option<String>)> {
        let u = user.to_owned();
        self.db
            .read(move |c| accounts::get_profile(c, &u))
            .await?
            .ok_or_else(|| MatrixError::not_found("Profile not found").into())
    }

    /// Sets the display name or avatar and updates the user's member event in every joined room.
    pub async fn set_profile_field(
        &self,
        user: &UserId,
        field: &str,
        value: Option<String>,
    ) -> Result<()> {
        let (u, f, v) = (user.to_string(), field.to_owned(), value.clone());
        self.db
            .write(move |txn| match f.as_str() {
                "displayname" => accounts::set_displayname(txn, &u, v.as_deref()),
                "avatar_url" => accounts::set_avatar_url(txn, &u, v.as_deref()),
                _ => Err(MatrixError::invalid_param("Unknown profile field").into()),
            })
            .await?;
        for room_id in self.rooms.joined_rooms(user.as_str()).await? {
            let Some(current) = self
                .rooms
                .state_content(&room_id, "m.room.member", user.as_str())
                .await?
            else {
                continue;
            };
            let mut content: Map<String, Value> = current.as_object().cloned().unwrap_or_default();
            match &value {
                Some(v) => content.insert(field.to_owned(), json!(v)),
                None => content.remove(field),
            };
            let tpl = EventTemplate::state("m.room.member", user.as_str(), Value::Object(content));
            if let Err(e) = self.rooms.send(user, &room_id, tpl, None).await {
                tracing::warn!(room = %room_id, error = %e, "could not update member event after profile change");
            }
        }
        Ok(())
    }

    /// Searches the user directory for `term`: local users sharing a room with `requester` or
    /// in a public room whose user id or display name has a word starting with each word of
    /// the term (case-insensitive). Returns at most `limit` results and whether there were more.
    pub async fn search_users(
        &self,
        requester: &str,
        term: &str,
        limit: usize,
    ) -> Result<(Vec<Value>, bool)> {
        let words = search_words(term);
        if words.is_empty() {
            return Ok((Vec::new(), false));
        }
        let req = requester.to_owned();
        let candidates = self
            .db
            .read(move |c| accounts::directory_candidates(c, &req))
            .await?;
        let whole = term.trim().to_lowercase();
        let mut found: Vec<(bool, Value)> = candidates
            .into_iter()
            .filter_map(|(user_id, localpart, name, avatar)| {
                // The localpart, not the whole id: every local id ends in the same server name.
                let mut tokens = search_words(&localpart);
                tokens.push(localpart.to_lowercase());
                if let Some(n) = &name {
                    tokens.extend(search_words(n));
                    tokens.push(n.to_lowercase());
                }
                let by_words = words
                    .iter()
                    .all(|w| tokens.iter().any(|t| t.starts_with(w.as_str())));
                if !by_words && !user_id.to_lowercase().starts_with(&whole) {
                    return None;
                }
                // Whole-term prefix matches of the name or localpart rank first.
                let strong = localpart.to_lowercase().starts_with(&whole)
                    || name
                        .as_ref()
                        .is_some_and(|n| n.to_lowercase().starts_with(&whole));
                let mut entry = Map::new();
                entry.insert("user_id".into(), json!(user_id));
                if let Some(n) = name {
                    entry.insert("display_name".into(), json!(n));
                }
                if let Some(a) = avatar {
                    entry.insert("avatar_url".into(), json!(a));
                }
                Some((strong, Value::Object(entry)))
            })
            .collect();
        found.sort_by_key(|(strong, _)| !strong);
        let limited = found.len() > limit;
        Ok((
            found.into_iter().take(limit).map(|(_, v)| v).collect(),
            limited,
        ))
    }

    /// Stores a filter; returns its id.
    pub async fn create_filter(&self, user: &str, filter: &Filter) -> Result<String> {
        let (u, json) = (user.to_owned(), serde_json::to_string(filter)?);
        let id = self
            .db
            .write(move |txn| store::insert_filter(txn, &u, &json))
            .await?;
        Ok(id.to_string())
    }

    /// Loads a stored filter; `404 M_NOT_FOUND` if unknown.
    pub async fn filter(&self, user: &str, id: &str) -> Result<Filter> {
        let not_found = || MatrixError::not_found("Filter not found");
        let id: i64 = id.parse().map_err(|_| not_found())?;
        let u = user.to_owned();
        let json = self
            .db
            .read(move |c| store::get_filter(c, &u, id))
            .await?
            .ok_or_else(not_found)?;
        Ok(serde_json::from_str(&json)?)
    }
}

/// The `tags` object of stored `m.tag` content, `{}` when absent or malformed.
fn tags_of(stored: Option<&str>) -> Value {
    stored
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.get("tags").filter(|t| t.is_object()).cloned())
        .unwrap_or_else(|| json!({}))
}

/// The lowercase alphanumeric words of a text.
fn search_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}
