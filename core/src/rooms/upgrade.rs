//! Room upgrades (`POST /rooms/{roomId}/upgrade`): a new room of another version that
//! continues the old one, and a tombstone in the old one pointing at it.

use ruma::{OwnedRoomId, UserId};
use serde_json::{Map, Value, json};

use super::{
    EventTemplate, Rooms,
    create::{CreateRoomRequest, InitialStateEvent},
    graph,
    membership::power_levels,
};
use crate::{
    error::{MatrixError, Result},
    storage::{aliases, events as ev_store},
};

/// State copied from the old room to the new one (power levels are handled on their own).
const COPIED_STATE: &[&str] = &[
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.canonical_alias",
];

impl Rooms {
    /// Upgrades `room_id` to `new_version` for `user`; returns the new room's id.
    ///
    /// Needs the power to send `m.room.tombstone` in the old room. The new room gets the old
    /// room's name, topic, avatar, join rules, history visibility, guest access, encryption,
    /// server ACL, canonical alias and power levels (the upgrader at 100, or as creator in
    /// rooms whose versions rank creators above everyone); local aliases move to it. The old
    /// room gets the tombstone, loses its canonical alias, and only moderators may speak or
    /// invite there afterwards.
    pub async fn upgrade_room(
        &self,
        user: &UserId,
        room_id: &str,
        new_version: &str,
    ) -> Result<OwnedRoomId> {
        let (_, new_rules) = graph::version_rules(new_version)?;
        let (u, r) = (user.to_string(), room_id.to_owned());
        let (state, mut levels) = self
            .db
            .read(move |conn| {
                if ev_store::get_room(conn, &r)?.is_none() {
                    return Err(MatrixError::not_found("Room not found").into());
                }
                let ctx = graph::RoomCtx::load(conn, &r)?;
                let joined =
                    ev_store::membership(conn, &r, &u)?.is_some_and(|m| m.membership == "join");
                if !joined {
                    return Err(MatrixError::forbidden("You are not in this room").into());
                }
                let pl = power_levels(conn, &ctx)?;
                if pl.user_level(&u) < pl.event_level("m.room.tombstone", true) {
                    return Err(MatrixError::forbidden("You may not upgrade this room").into());
                }
                let content = |ty: &str| -> Result<Option<Map<String, Value>>> {
                    let Some(id) = ctx.state_event(ty, "") else {
                        return Ok(None);
                    };
                    let Some(json) = ev_store::get_event_json(conn, id)? else {
                        return Ok(None);
                    };
                    let v: Value = serde_json::from_str(&json)?;
                    Ok(v.get("content").and_then(Value::as_object).cloned())
                };
                let mut state = Vec::new();
                for ty in COPIED_STATE {
                    if let Some(c) = content(ty)?.filter(|c| !c.is_empty()) {
                        state.push(((*ty).to_owned(), c));
                    }
                }
                let levels = content("m.room.power_levels")?.unwrap_or_default();
                Ok((state, levels))
            })
            .await?;

        // The upgrader must be able to set the new room up.
        let mut users = levels
            .get("users")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if new_rules.authorization.explicitly_privilege_room_creators {
            users.remove(user.as_str());
        } else {
            let current = users
                .get(user.as_str())
                .and_then(Value::as_i64)
                .unwrap_or(0);
            users.insert(user.to_string(), json!(current.max(100)));
        }
        levels.insert("users".into(), Value::Object(users));

        let public = state.iter().any(|(ty, c)| {
            ty == "m.room.join_rules" && c.get("join_rule") == Some(&json!("public"))
        });
        let mut predecessor = Map::new();
        predecessor.insert("predecessor".into(), json!({ "room_id": room_id }));
        let req = CreateRoomRequest {
            room_version: Some(new_version.to_owned()),
            creation_content: Some(predecessor),
            preset: Some(
                if public {
                    "public_chat"
                } else {
                    "private_chat"
                }
                .to_owned(),
            ),
            power_level_content_override: Some(levels.clone()),
            initial_state: state
                .iter()
                .map(|(ty, c)| InitialStateEvent {
                    event_type: crate::validate::EventType(ty.clone()),
                    state_key: crate::validate::StateKey::default(),
                    content: c.clone(),
                })
                .collect(),
            ..CreateRoomRequest::default()
        };
        let new_room = self.create_room(user, req).await?;

        let (from, to) = (room_id.to_owned(), new_room.to_string());
        self.db
            .write(move |txn| aliases::move_aliases(txn, &from, &to))
            .await?;
        let tombstone = EventTemplate::state(
            "m.room.tombstone",
            "",
            json!({ "body": "This room has been replaced", "replacement_room": new_room }),
        );
        self.send(user, room_id, tombstone, None).await?;
        if state.iter().any(|(ty, _)| ty == "m.room.canonical_alias") {
            let cleared = EventTemplate::state("m.room.canonical_alias", "", json!({}));
            if let Err(e) = self.send(user, room_id, cleared, None).await {
                tracing::warn!(room = %room_id, error = %e, "could not clear the old room's alias");
            }
        }
        // Only moderators may speak or invite in the old room from now on.
        let users_default = levels
            .get("users_default")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        let old_levels = self
            .state_content(room_id, "m.room.power_levels", "")
            .await?
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let mut old_levels = old_levels;
        let needs =
            |key: &str| old_levels.get(key).and_then(Value::as_i64).unwrap_or(0) < restricted;
        if needs("events_default") || needs("invite") {
            old_levels.insert("events_default".into(), json!(restricted));
            old_levels.insert("invite".into(), json!(restricted));
            let tpl = EventTemplate::state("m.room.power_levels", "", Value::Object(old_levels));
            if let Err(e) = self.send(user, room_id, tpl, None).await {
                tracing::warn!(room = %room_id, error = %e, "could not restrict the old room");
            }
        }
        Ok(new_room)
    }
}
