//! `createRoom`: the create event and a new room's initial state, in one transaction.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{EventTemplate, Rooms, graph};
use crate::{
    error::{Error, ErrorCode, MatrixError, Result},
    storage::{WriteTxn, aliases, events as ev_store},
    validate::{self, EventType, StateKey, UserIdParam},
};

/// A state event given in `initial_state`.
#[derive(Debug, Clone, Deserialize)]
pub struct InitialStateEvent {
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// State key (defaults to empty).
    #[serde(default)]
    pub state_key: StateKey,
    /// Content.
    pub content: Map<String, Value>,
}

/// The body of `POST /createRoom`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateRoomRequest {
    /// `public` publishes the room in the directory.
    pub visibility: Option<String>,
    /// Local part of an alias to create.
    pub room_alias_name: Option<String>,
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// Users to invite.
    #[serde(default)]
    pub invite: Vec<UserIdParam>,
    /// Room version.
    pub room_version: Option<String>,
    /// Extra content for the create event.
    pub creation_content: Option<Map<String, Value>>,
    /// Extra state events.
    #[serde(default)]
    pub initial_state: Vec<InitialStateEvent>,
    /// `private_chat`, `trusted_private_chat` or `public_chat`.
    pub preset: Option<String>,
    /// Whether this is a direct chat.
    #[serde(default)]
    pub is_direct: bool,
    /// Overrides for the default power levels.
    pub power_level_content_override: Option<Map<String, Value>>,
}

impl CreateRoomRequest {
    /// Checks the state the request gives against the shapes the spec sets for its types
    /// (`M_BAD_JSON` otherwise), before anything is made.
    pub fn check_state(&self) -> Result<(), MatrixError> {
        for ev in &self.initial_state {
            validate::state_content(&ev.event_type.0, &ev.content)?;
        }
        if let Some(overrides) = &self.power_level_content_override {
            validate::state_content("m.room.power_levels", overrides)?;
        }
        Ok(())
    }
}

impl Rooms {
    /// Creates a room as `creator` and returns its id.
    pub async fn create_room(
        &self,
        creator: &UserId,
        req: CreateRoomRequest,
    ) -> Result<OwnedRoomId> {
        let version = req
            .room_version
            .clone()
            .unwrap_or_else(|| graph::DEFAULT_VERSION.to_string());
        let (version, rules) = graph::version_rules(&version)?;
        let server = self.identity.server_name().to_owned();
        let preset = match req.preset.as_deref() {
            Some(p @ ("private_chat" | "trusted_private_chat" | "public_chat")) => p.to_owned(),
            Some(other) => {
                return Err(MatrixError::bad_json(format!("Unknown preset {other:?}")).into());
            }
            None if req.visibility.as_deref() == Some("public") => "public_chat".to_owned(),
            None => "private_chat".to_owned(),
        };
        if let Some(v) = req.visibility.as_deref()
            && v != "public"
            && v != "private"
        {
            return Err(MatrixError::bad_json("visibility must be public or private").into());
        }
        let invites: Vec<OwnedUserId> = req.invite.iter().map(|u| u.0.clone()).collect();
        for invitee in &invites {
            super::membership::check_invitee(self.identity.server_name().as_str(), invitee)?;
        }
        let alias = req
            .room_alias_name
            .as_deref()
            .map(|name| validate::alias_localpart(name, server.as_str()))
            .transpose()?;

        let creator = creator.to_owned();
        let identity = self.identity.clone();
        let room_id = self
            .db
            .write(move |txn| {
                if let Some(alias) = &alias
                    && aliases::get_alias(txn, alias)?.is_some()
                {
                    return Err(MatrixError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        ErrorCode::RoomInUse,
                        "Room alias already taken",
                    )
                    .into());
                }
                let trusted = preset == "trusted_private_chat";
                let v12 = rules.authorization.room_create_event_id_as_room_id;
                let room_id =
                    if v12 { None } else { Some(format!("!{}:{}", crate::accounts::random_string(18), server)) };
                let mut ctx = graph::RoomCtx::new_room(version.clone(), rules.clone(), room_id);

                // 1. The create event.
                let mut create = req.creation_content.clone().unwrap_or_default();
                create.insert("room_version".into(), json!(version.as_str()));
                if !rules.authorization.use_room_create_sender {
                    create.insert("creator".into(), json!(creator.as_str()));
                }
                if trusted && rules.authorization.additional_room_creators && !invites.is_empty() {
                    create.insert("additional_creators".into(), json!(invites));
                }
                let tpl = EventTemplate::state("m.room.create", "", Value::Object(create));
                let (pdu, obj) =
                    graph::build_event(&ctx, &identity, &creator, &tpl, crate::storage::now_ms())?;
                let room_id = match &ctx.room_id {
                    Some(id) => id.clone(),
                    None => format!("!{}", &pdu.event_id.as_str()[1..]),
                };
                ctx.room_id = Some(room_id.clone());
                ev_store::insert_room(txn, &room_id, version.as_str(), creator.as_str())?;
                graph::check_auth(txn, &ctx, &pdu)?;
                graph::persist_event(txn, &mut ctx, &pdu, &obj, None)?;

                let add = |txn: &mut WriteTxn<'_>, ctx: &mut graph::RoomCtx, tpl: EventTemplate| -> Result<()> {
                    graph::append(txn, ctx, &identity, &creator, &tpl, None)?;
                    Ok(())
                };

                // 2. The creator joins.
                let join = super::membership::member_content(txn, creator.as_str(), "join")?;
                add(txn, &mut ctx, EventTemplate::state("m.room.member", creator.as_str(), Value::Object(join)))?;

                // 3. Power levels.
                let mut users = Map::new();
                if !rules.authorization.explicitly_privilege_room_creators {
                    users.insert(creator.to_string(), json!(100));
                    if trusted {
                        for u in &invites {
                            users.insert(u.to_string(), json!(100));
                        }
                    }
                }
                let mut pl = json!({
                    "users": users,
                    "users_default": 0,
                    "events": {
                        "m.room.name": 50,
                        "m.room.power_levels": 100,
                        "m.room.history_visibility": 100,
                        "m.room.canonical_alias": 50,
                        "m.room.avatar": 50,
                        "m.room.tombstone": 100,
                        "m.room.server_acl": 100,
                        "m.room.encryption": 100,
                    },
                    "events_default": 0,
                    "state_default": 50,
                    "ban": 50,
                    "kick": 50,
                    "redact": 50,
                    "invite": if preset == "public_chat" { 50 } else { 0 },
                    "notifications": { "room": 50 },
                });
                if let Some(overrides) = &req.power_level_content_override
                    && let Some(obj) = pl.as_object_mut()
                {
                    for (k, v) in overrides {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                add(txn, &mut ctx, EventTemplate::state("m.room.power_levels", "", pl))?;

                // 4. Alias.
                if let Some(alias) = &alias {
                    aliases::insert_alias(txn, alias, &room_id, creator.as_str())?;
                    add(
                        txn,
                        &mut ctx,
                        EventTemplate::state("m.room.canonical_alias", "", json!({ "alias": alias })),
                    )?;
                }

                // 5. The preset's state, unless initial_state sets it.
                let given = |ty: &str| req.initial_state.iter().any(|e| e.event_type.0 == ty && e.state_key.0.is_empty());
                let join_rule = if preset == "public_chat" { "public" } else { "invite" };
                if !given("m.room.join_rules") {
                    add(txn, &mut ctx, EventTemplate::state("m.room.join_rules", "", json!({ "join_rule": join_rule })))?;
                }
                if !given("m.room.history_visibility") {
                    add(
                        txn,
                        &mut ctx,
                        EventTemplate::state("m.room.history_visibility", "", json!({ "history_visibility": "shared" })),
                    )?;
                }
                if preset != "public_chat" && !given("m.room.guest_access") {
                    add(
                        txn,
                        &mut ctx,
                        EventTemplate::state("m.room.guest_access", "", json!({ "guest_access": "can_join" })),
                    )?;
                }

                // 6. initial_state.
                for ev in &req.initial_state {
                    let ty = ev.event_type.0.as_str();
                    if ty == "m.room.create" || ty == "m.room.member" {
                        return Err(MatrixError::bad_json(format!("{ty} cannot be given in initial_state")).into());
                    }
                    add(txn, &mut ctx, EventTemplate::state(ty, &ev.state_key.0, Value::Object(ev.content.clone())))?;
                }

                // 7. Name and topic.
                if let Some(name) = &req.name {
                    add(txn, &mut ctx, EventTemplate::state("m.room.name", "", json!({ "name": name })))?;
                }
                if let Some(topic) = &req.topic {
                    add(
                        txn,
                        &mut ctx,
                        EventTemplate::state(
                            "m.room.topic",
                            "",
                            json!({ "topic": topic, "m.topic": { "m.text": [{ "mimetype": "text/plain", "body": topic }] } }),
                        ),
                    )?;
                }

                // 8. Invites.
                for invitee in &invites {
                    let mut content = super::membership::member_content(txn, invitee.as_str(), "invite")?;
                    if req.is_direct {
                        content.insert("is_direct".into(), json!(true));
                    }
                    add(txn, &mut ctx, EventTemplate::state("m.room.member", invitee.as_str(), Value::Object(content)))?;
                }

                if req.visibility.as_deref() == Some("public") {
                    ev_store::set_room_published(txn, &room_id, true)?;
                }
                Ok(room_id)
            })
            .await?;
        self.notifier.notify();
        RoomId::parse(room_id).map_err(|e| Error::Event(e.to_string()))
    }
}
