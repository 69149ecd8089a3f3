//! Membership changes (join, invite, leave, kick, ban, unban) and power levels.

use std::collections::HashMap;

use ruma::{OwnedRoomId, RoomId, UserId};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{EventTemplate, Rooms, graph};
use crate::{
    error::{MatrixError, Result},
    identity::Identity,
    storage::{WriteTxn, accounts, aliases, events as ev_store},
};

/// The effective power levels of a room.
#[derive(Debug, Clone)]
pub struct PowerLevels {
    users: HashMap<String, i64>,
    users_default: i64,
    events: HashMap<String, i64>,
    events_default: i64,
    state_default: i64,
    /// Level needed to ban.
    pub ban: i64,
    /// Level needed to kick.
    pub kick: i64,
    /// Level needed to redact others' events.
    pub redact: i64,
    /// Level needed to invite.
    pub invite: i64,
    creators: Vec<String>,
}

impl PowerLevels {
    /// The level of a user (room creators of v12 rooms rank above everyone).
    pub fn user_level(&self, user: &str) -> i64 {
        if self.creators.iter().any(|c| c == user) {
            return i64::MAX;
        }
        self.users.get(user).copied().unwrap_or(self.users_default)
    }

    /// The level needed to send an event of this type.
    pub fn event_level(&self, ty: &str, is_state: bool) -> i64 {
        self.events.get(ty).copied().unwrap_or(if is_state {
            self.state_default
        } else {
            self.events_default
        })
    }
}

fn int(v: Option<&Value>, default: i64) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(s)) => s.parse().unwrap_or(default),
        _ => default,
    }
}

fn content_of(conn: &Connection, event_id: Option<&String>) -> Result<Option<Value>> {
    let Some(id) = event_id else { return Ok(None) };
    let Some(json) = ev_store::get_event_json(conn, id)? else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&json)?;
    Ok(v.get("content").cloned())
}

/// Reads the power levels of a room from its current state.
pub fn power_levels(conn: &Connection, ctx: &graph::RoomCtx) -> Result<PowerLevels> {
    let create_id = ctx.state_event("m.room.create", "");
    let mut creators = Vec::new();
    if ctx.rules.authorization.explicitly_privilege_room_creators
        && let Some(id) = create_id
        && let Some(json) = ev_store::get_event_json(conn, id)?
    {
        let v: Value = serde_json::from_str(&json)?;
        if let Some(s) = v.get("sender").and_then(Value::as_str) {
            creators.push(s.to_owned());
        }
        if let Some(extra) = v
            .pointer("/content/additional_creators")
            .and_then(Value::as_array)
        {
            creators.extend(extra.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    }
    let Some(pl) = content_of(conn, ctx.state_event("m.room.power_levels", ""))? else {
        // No power levels event: the creator has 100, everyone else 0.
        let mut users = HashMap::new();
        if let Some(json) = create_id
            .map(|id| ev_store::get_event_json(conn, id))
            .transpose()?
            .flatten()
        {
            let v: Value = serde_json::from_str(&json)?;
            if let Some(s) = v.get("sender").and_then(Value::as_str) {
                users.insert(s.to_owned(), 100);
            }
        }
        return Ok(PowerLevels {
            users,
            users_default: 0,
            events: HashMap::new(),
            events_default: 0,
            state_default: 0,
            ban: 50,
            kick: 50,
            redact: 50,
            invite: 0,
            creators,
        });
    };
    let map = |key: &str| -> HashMap<String, i64> {
        pl.get(key)
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), int(Some(v), 0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(PowerLevels {
        users: map("users"),
        users_default: int(pl.get("users_default"), 0),
        events: map("events"),
        events_default: int(pl.get("events_default"), 0),
        state_default: int(pl.get("state_default"), 50),
        ban: int(pl.get("ban"), 50),
        kick: int(pl.get("kick"), 50),
        redact: int(pl.get("redact"), 50),
        invite: int(pl.get("invite"), 0),
        creators,
    })
}

/// The member event content for `user_id` taking `membership` (a local user joining, or
/// anyone being invited): the membership plus the user's profile as this node knows it.
pub(crate) fn member_content(
    conn: &Connection,
    user_id: &str,
    membership: &str,
) -> Result<Map<String, Value>> {
    let mut content = Map::new();
    content.insert("membership".into(), json!(membership));
    let (name, avatar) = known_profile(conn, user_id)?;
    if let Some(name) = name {
        content.insert("displayname".into(), json!(name));
    }
    if let Some(avatar) = avatar {
        content.insert("avatar_url".into(), json!(avatar));
    }
    Ok(content)
}

/// A user's display name and avatar as this node knows them: a local user's profile, or for
/// a user of another server, what their latest join in a room the node holds said. Nothing is
/// asked of the other server, so an invite never waits on a peer that may be out of reach.
pub(crate) fn known_profile(
    conn: &Connection,
    user_id: &str,
) -> Result<(Option<String>, Option<String>)> {
    if let Some(profile) = accounts::get_profile(conn, user_id)? {
        return Ok(profile);
    }
    let content = content_of(conn, ev_store::latest_join_event(conn, user_id)?.as_ref())?;
    let field = |key: &str| {
        content
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Ok((field("displayname"), field("avatar_url")))
}

/// Withdraws an invite (the inviter's leave for the invitee, with `reason`) if it is still the
/// invitee's membership and the inviter may still withdraw it. Returns whether it did.
pub(crate) fn withdraw_invite(
    txn: &mut WriteTxn<'_>,
    identity: &Identity,
    room_id: &str,
    invite_event_id: &str,
    reason: &str,
) -> Result<bool> {
    let Some(invite) = ev_store::get_event(txn, invite_event_id)? else {
        return Ok(false);
    };
    let invitee = invite.state_key.clone().unwrap_or_default();
    if ev_store::membership(txn, room_id, &invitee)?
        .is_none_or(|m| m.event_id != invite_event_id || m.membership != "invite")
    {
        return Ok(false);
    }
    let Ok(inviter) = UserId::parse(invite.sender.as_str()) else {
        return Ok(false);
    };
    let mut ctx = graph::RoomCtx::load(txn, room_id)?;
    let tpl = EventTemplate::state(
        "m.room.member",
        &invitee,
        json!({ "membership": "leave", "reason": reason }),
    );
    // The auth rules decide first, so a refusal writes nothing.
    let (pdu, _) = graph::build_event(&ctx, identity, &inviter, &tpl, crate::storage::now_ms())?;
    if graph::check_auth(txn, &ctx, &pdu).is_err() {
        return Ok(false);
    }
    graph::append(txn, &mut ctx, identity, &inviter, &tpl, None)?;
    Ok(true)
}

/// What a membership request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipAction {
    /// Join the room.
    Join,
    /// Invite someone.
    Invite,
    /// Leave (or reject an invite).
    Leave,
    /// Remove someone.
    Kick,
    /// Ban someone.
    Ban,
    /// Lift a ban.
    Unban,
}

impl Rooms {
    /// Resolves a room id or alias to a known room id.
    pub async fn resolve_room(&self, id_or_alias: &str) -> Result<OwnedRoomId> {
        let key = id_or_alias.to_owned();
        let resolved = self
            .db
            .read(move |conn| {
                if key.starts_with('#') {
                    Ok(aliases::get_alias(conn, &key)?.map(|(room, _)| room))
                } else {
                    Ok(ev_store::get_room(conn, &key)?.map(|_| key.clone()))
                }
            })
            .await?;
        let room = resolved.ok_or_else(|| MatrixError::not_found("Room not found"))?;
        RoomId::parse(room).map_err(|_| MatrixError::not_found("Room not found").into())
    }

    /// Applies a membership change made by `sender` to `target` in `room_id`.
    pub async fn change_membership(
        &self,
        sender: &UserId,
        room_id: &str,
        target: &UserId,
        action: MembershipAction,
        reason: Option<String>,
        extra: Map<String, Value>,
    ) -> Result<()> {
        if action == MembershipAction::Invite {
            check_invitee(self.identity.server_name().as_str(), target)?;
        }
        let identity = self.identity.clone();
        let (sender, target, room_id) = (sender.to_owned(), target.to_owned(), room_id.to_owned());
        self.db
            .write(move |txn| {
                let mut ctx = graph::RoomCtx::load(txn, &room_id)?;
                let current = ev_store::membership(txn, &room_id, target.as_str())?
                    .map(|m| m.membership)
                    .unwrap_or_else(|| "leave".to_owned());
                let mut content = match action {
                    MembershipAction::Join => {
                        if current == "ban" {
                            return Err(
                                MatrixError::forbidden("You are banned from this room").into()
                            );
                        }
                        member_content(txn, target.as_str(), "join")?
                    }
                    MembershipAction::Invite => {
                        match current.as_str() {
                            "join" => {
                                return Err(
                                    MatrixError::forbidden("User is already in the room").into()
                                );
                            }
                            "ban" => return Err(MatrixError::forbidden("User is banned").into()),
                            _ => {}
                        }
                        member_content(txn, target.as_str(), "invite")?
                    }
                    MembershipAction::Leave => {
                        if !matches!(current.as_str(), "join" | "invite" | "knock") {
                            return Err(MatrixError::forbidden("You are not in this room").into());
                        }
                        Map::from_iter([("membership".into(), json!("leave"))])
                    }
                    MembershipAction::Kick => {
                        if !matches!(current.as_str(), "join" | "invite" | "knock") {
                            return Err(MatrixError::forbidden("User is not in the room").into());
                        }
                        Map::from_iter([("membership".into(), json!("leave"))])
                    }
                    MembershipAction::Ban => Map::from_iter([("membership".into(), json!("ban"))]),
                    MembershipAction::Unban => {
                        if current != "ban" {
                            return Err(MatrixError::forbidden("User is not banned").into());
                        }
                        Map::from_iter([("membership".into(), json!("leave"))])
                    }
                };
                for (k, v) in extra {
                    content.entry(k).or_insert(v);
                }
                if let Some(reason) = reason {
                    content.insert("reason".into(), json!(reason));
                }
                // Joining again with nothing changed is a no-op, not a new member event;
                // unless the user's latest choice was to leave and state resolution brought
                // back an older join of theirs: then the join is made again, so that it is
                // their latest choice everywhere.
                if action == MembershipAction::Join
                    && current == "join"
                    && content_of(txn, ctx.state_event("m.room.member", target.as_str()))?
                        == Some(Value::Object(content.clone()))
                    && ev_store::latest_own_membership(txn, &room_id, target.as_str())?
                        .is_none_or(|(_, latest)| latest == "join")
                {
                    return Ok(());
                }
                let tpl =
                    EventTemplate::state("m.room.member", target.as_str(), Value::Object(content));
                graph::append(txn, &mut ctx, &identity, &sender, &tpl, None)?;
                Ok(())
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }

    /// Marks a room as forgotten by a user who has left it.
    pub async fn forget(&self, user: &UserId, room_id: &str) -> Result<()> {
        let (user, room_id) = (user.to_string(), room_id.to_owned());
        self.db
            .write(
                move |txn| match ev_store::membership(txn, &room_id, &user)? {
                    Some(m) if m.membership == "join" || m.membership == "invite" => Err(
                        MatrixError::bad_request("You must leave the room before forgetting it")
                            .into(),
                    ),
                    Some(_) => ev_store::forget_room(txn, &room_id, &user),
                    None => Err(MatrixError::not_found("You have never been in this room").into()),
                },
            )
            .await
    }
}

/// Refuses an invitee this node could never reach: a user of another server must name it by
/// the one spelling of its key (lowercase base32), so `@bob:ABC…` names nobody.
pub(crate) fn check_invitee(local: &str, target: &UserId) -> Result<()> {
    let server = target.server_name().as_str();
    if server != local && crate::identity::key_for_server_name(server).is_none() {
        return Err(MatrixError::invalid_param(format!(
            "{server} is not a server this node can reach: server names are the lowercase \
             base32 of the server's key"
        ))
        .into());
    }
    Ok(())
}
