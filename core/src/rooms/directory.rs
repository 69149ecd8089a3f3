//! Aliases, the public room directory and room lists.

use serde_json::{Value, json};

use super::{Rooms, graph::RoomCtx, membership::power_levels};
use crate::{
    error::{ErrorCode, MatrixError, Result},
    storage::{aliases, events as ev_store, state as state_store},
};

impl Rooms {
    /// Rooms the user is joined to.
    pub async fn joined_rooms(&self, user: &str) -> Result<Vec<String>> {
        let user = user.to_owned();
        self.db
            .read(move |conn| {
                Ok(ev_store::memberships_of_user(conn, &user)?
                    .into_iter()
                    .filter(|m| m.membership == "join")
                    .map(|m| m.room_id)
                    .collect())
            })
            .await
    }

    /// Every room the user is in, invited to or knocking on: `(room_id, membership)`.
    pub async fn memberships(&self, user: &str) -> Result<Vec<(String, String)>> {
        let user = user.to_owned();
        self.db
            .read(move |conn| {
                Ok(ev_store::memberships_of_user(conn, &user)?
                    .into_iter()
                    .filter(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
                    .map(|m| (m.room_id, m.membership))
                    .collect())
            })
            .await
    }

    /// Resolves an alias: `(room_id, servers)`.
    pub async fn alias(&self, alias: &str) -> Result<(String, Vec<String>)> {
        let a = alias.to_owned();
        let found = self
            .db
            .read(move |conn| aliases::get_alias(conn, &a))
            .await?;
        let (room_id, _) = found.ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
        Ok((room_id, vec![self.identity.server_name().to_string()]))
    }

    /// Creates an alias on this server for a room the user is in.
    pub async fn create_alias(&self, user: &str, alias: &str, room_id: &str) -> Result<()> {
        let server = self.identity.server_name().as_str();
        if !alias.ends_with(&format!(":{server}")) {
            return Err(MatrixError::invalid_param("Aliases must be on this server").into());
        }
        let (user, alias, room_id) = (user.to_owned(), alias.to_owned(), room_id.to_owned());
        self.db
            .write(move |txn| {
                if ev_store::get_room(txn, &room_id)?.is_none() {
                    return Err(MatrixError::not_found("Unknown room").into());
                }
                if ev_store::membership(txn, &room_id, &user)?
                    .is_none_or(|m| m.membership != "join")
                {
                    return Err(MatrixError::forbidden("You are not joined to this room").into());
                }
                if !aliases::insert_alias(txn, &alias, &room_id, &user)? {
                    return Err(MatrixError::new(
                        axum::http::StatusCode::CONFLICT,
                        ErrorCode::Unknown,
                        "Room alias already exists",
                    )
                    .into());
                }
                Ok(())
            })
            .await
    }

    /// Deletes an alias: its creator or a room moderator may.
    pub async fn delete_alias(&self, user: &str, alias: &str) -> Result<()> {
        let (user, alias) = (user.to_owned(), alias.to_owned());
        self.db
            .write(move |txn| {
                let (room_id, creator) = aliases::get_alias(txn, &alias)?
                    .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
                if creator != user {
                    let ctx = RoomCtx::load(txn, &room_id)?;
                    let levels = power_levels(txn, &ctx)?;
                    if levels.user_level(&user) < levels.event_level("m.room.canonical_alias", true)
                    {
                        return Err(MatrixError::forbidden("You may not delete this alias").into());
                    }
                }
                aliases::delete_alias(txn, &alias)
            })
            .await
    }

    /// The local aliases of a room, for a user who can see it.
    pub async fn room_aliases(&self, user: &str, room_id: &str) -> Result<Vec<String>> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        let now_pos = self.db.current_pos();
        self.db
            .read(move |conn| {
                if super::timeline::visible_upto(conn, &room_id, &user, now_pos)?.is_none() {
                    return Err(
                        MatrixError::forbidden("You are not allowed to view this room").into(),
                    );
                }
                aliases::aliases_of_room(conn, &room_id)
            })
            .await
    }

    /// Whether a room is in the public directory.
    pub async fn is_published(&self, room_id: &str) -> Result<bool> {
        let room_id = room_id.to_owned();
        let room = self
            .db
            .read(move |conn| ev_store::get_room(conn, &room_id))
            .await?;
        Ok(room
            .ok_or_else(|| MatrixError::not_found("Unknown room"))?
            .published)
    }

    /// Publishes or unpublishes a room; needs a moderator (canonical alias power).
    pub async fn set_published(&self, user: &str, room_id: &str, published: bool) -> Result<()> {
        let (user, room_id) = (user.to_owned(), room_id.to_owned());
        self.db
            .write(move |txn| {
                let ctx = RoomCtx::load(txn, &room_id)?;
                let levels = power_levels(txn, &ctx)?;
                if levels.user_level(&user) < levels.event_level("m.room.canonical_alias", true) {
                    return Err(
                        MatrixError::forbidden("You may not change the room's visibility").into(),
                    );
                }
                ev_store::set_room_published(txn, &room_id, published)
            })
            .await
    }

    /// The public room directory.
    pub async fn public_rooms(&self) -> Result<Vec<Value>> {
        self.db
            .read(move |conn| {
                let mut out = Vec::new();
                for room_id in ev_store::published_rooms(conn)? {
                    let content = |ty: &str, field: &str| -> Result<Option<Value>> {
                        let Some(id) = state_store::current_state_event(conn, &room_id, ty, "")? else {
                            return Ok(None);
                        };
                        let Some(json) = ev_store::get_event_json(conn, &id)? else { return Ok(None) };
                        let v: Value = serde_json::from_str(&json)?;
                        Ok(v.pointer(&format!("/content/{field}")).cloned())
                    };
                    let joined = ev_store::room_members(conn, &room_id, Some("join"))?.len();
                    let mut entry = json!({
                        "room_id": room_id,
                        "num_joined_members": joined,
                        "world_readable": content("m.room.history_visibility", "history_visibility")?
                            == Some(json!("world_readable")),
                        "guest_can_join": content("m.room.guest_access", "guest_access")? == Some(json!("can_join")),
                        "join_rule": content("m.room.join_rules", "join_rule")?.unwrap_or(json!("public")),
                    });
                    for (key, ty, field) in [
                        ("name", "m.room.name", "name"),
                        ("topic", "m.room.topic", "topic"),
                        ("canonical_alias", "m.room.canonical_alias", "alias"),
                        ("avatar_url", "m.room.avatar", "url"),
                    ] {
                        if let Some(v) = content(ty, field)? {
                            entry[key] = v;
                        }
                    }
                    out.push(entry);
                }
                Ok(out)
            })
            .await
    }
}
