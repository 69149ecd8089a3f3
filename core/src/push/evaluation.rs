//! Push rule evaluation: as an event joins a room's timeline, every local member's rules
//! decide whether it notifies them, and the notification is recorded for the unread counts
//! and `/notifications`.

use std::collections::BTreeMap;

use futures::FutureExt;
use ruma::{
    Int, OwnedUserId, RoomId, UInt, UserId,
    power_levels::NotificationPowerLevels,
    push::{Action, PushCondition, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    room_version_rules::{RoomPowerLevelsRules, RoomVersionRules},
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::Value;

use super::rules::cached_ruleset;
use crate::{
    error::Result,
    storage::{events as ev_store, push as store, pushers as pusher_store, state as state_store},
};

/// The thread an event belongs to: its root for an `m.thread` relation, `None` for the main
/// timeline.
pub fn thread_root<'a>(relates_to: Option<&'a str>, rel_type: Option<&str>) -> Option<&'a str> {
    relates_to.filter(|_| rel_type == Some("m.thread"))
}

/// Evaluates the push rules of every local joined member except the sender against an event
/// that just joined the room's timeline at `stream`, and records who it notifies. Runs in the
/// transaction that stores the event, so counts survive restarts with the event.
pub fn record_event(
    conn: &Connection,
    room_id: &str,
    rules: &RoomVersionRules,
    stream: i64,
    json: &str,
    sender: &str,
    thread: Option<&str>,
) -> Result<()> {
    forget_on_leave(conn, room_id, json)?;
    let members = store::joined_members(conn, room_id)?;
    if !members.iter().any(|m| m.local && m.user_id != sender) {
        return Ok(());
    }
    let Ok(room) = RoomId::parse(room_id) else {
        return Ok(());
    };
    let Ok(raw) = serde_json::value::RawValue::from_string(json.to_owned()) else {
        return Ok(());
    };
    let event: Raw<Value> = Raw::from_json(raw);
    let member_count = UInt::try_from(members.len()).unwrap_or(UInt::MAX);
    // Power levels and display names cost a few reads and parses, so they are loaded only
    // when a rule could look at them.
    let room_mention = json.contains("m.mentions")
        && serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|v| {
                v.pointer("/content/m.mentions/room")
                    .and_then(Value::as_bool)
            })
            .unwrap_or(false);
    let mut power_levels: Option<Option<PushConditionPowerLevelsCtx>> = None;
    for m in members.iter().filter(|m| m.local && m.user_id != sender) {
        let Ok(user) = UserId::parse(&m.user_id) else {
            continue;
        };
        let ruleset = cached_ruleset(&user, m.rules.as_deref());
        let display_name = if uses(&ruleset, is_display_name_condition) {
            display_name(conn, &m.member_event)?.unwrap_or_else(|| user.to_string())
        } else {
            String::new()
        };
        let mut ctx = PushConditionRoomCtx::new(room.clone(), member_count, user, display_name);
        if room_mention || uses(&ruleset, is_permission_condition) {
            if power_levels.is_none() {
                power_levels = Some(power_levels_ctx(conn, room_id, rules)?);
            }
            if let Some(Some(pl)) = &power_levels {
                ctx = ctx.with_power_levels(pl.clone());
            }
        }
        // Without thread subscriptions no condition waits on anything: the future is ready.
        let Some(actions) = ruleset.get_actions(&event, &ctx).now_or_never() else {
            continue;
        };
        if actions.iter().any(Action::should_notify) {
            let highlight = actions.iter().any(Action::is_highlight);
            store::insert_action(
                conn,
                &m.user_id,
                room_id,
                stream,
                thread.unwrap_or(""),
                highlight,
            )?;
            pusher_store::insert_notification(
                conn,
                &m.user_id,
                room_id,
                stream,
                thread.unwrap_or(""),
                highlight,
                &serde_json::to_string(&actions)?,
            )?;
        }
    }
    Ok(())
}

/// A member who leaves (or is kicked or banned) drops their unread notifications of the room,
/// so that coming back later starts from nothing.
fn forget_on_leave(conn: &Connection, room_id: &str, json: &str) -> Result<()> {
    if !json.contains("m.room.member") {
        return Ok(());
    }
    let Ok(event) = serde_json::from_str::<Value>(json) else {
        return Ok(());
    };
    if event["type"] != "m.room.member" || event["content"]["membership"] == "join" {
        return Ok(());
    }
    if let Some(user) = event["state_key"].as_str() {
        store::clear_room(conn, user, room_id)?;
        pusher_store::clear_room_notifications(conn, user, room_id)?;
    }
    Ok(())
}

#[allow(deprecated)]
fn is_display_name_condition(c: &PushCondition) -> bool {
    matches!(c, PushCondition::ContainsDisplayName)
}

fn is_permission_condition(c: &PushCondition) -> bool {
    matches!(c, PushCondition::SenderNotificationPermission(_))
}

/// Whether an enabled rule a user wrote has a condition of this sort. (Among the server
/// defaults only `.m.rule.is_room_mention` checks a permission, and only for events whose
/// `m.mentions` mention the room; none looks at display names.)
fn uses(rules: &Ruleset, condition: fn(&PushCondition) -> bool) -> bool {
    rules
        .override_
        .iter()
        .chain(rules.underride.iter())
        .filter(|r| r.enabled && !r.default)
        .any(|r| r.conditions.iter().any(condition))
}

fn display_name(conn: &Connection, member_event: &str) -> Result<Option<String>> {
    let Some(json) = ev_store::get_event_json(conn, member_event)? else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&json)?;
    Ok(v.pointer("/content/displayname")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned))
}

fn int(v: Option<&Value>) -> Option<Int> {
    match v? {
        Value::Number(n) => n.as_i64().map(Int::new_saturating),
        Value::String(s) => s.trim().parse::<i64>().ok().map(Int::new_saturating),
        _ => None,
    }
}

fn state_content(conn: &Connection, room_id: &str, ty: &str) -> Result<Option<Value>> {
    let Some(id) = state_store::current_state_event(conn, room_id, ty, "")? else {
        return Ok(None);
    };
    let Some(json) = ev_store::get_event_json(conn, &id)? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&json)?))
}

/// The power levels that `sender_notification_permission` conditions (`@room`) check.
fn power_levels_ctx(
    conn: &Connection,
    room_id: &str,
    rules: &RoomVersionRules,
) -> Result<Option<PushConditionPowerLevelsCtx>> {
    let create = state_content(conn, room_id, "m.room.create")?;
    let creator = create
        .as_ref()
        .and_then(|c| c.get("sender"))
        .and_then(Value::as_str)
        .and_then(|s| UserId::parse(s).ok());
    let mut creators: Vec<OwnedUserId> = creator.iter().cloned().collect();
    if let Some(extra) = create
        .as_ref()
        .and_then(|c| c.pointer("/content/additional_creators"))
        .and_then(Value::as_array)
    {
        creators.extend(
            extra
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|s| UserId::parse(s).ok()),
        );
    }
    let pl_rules = RoomPowerLevelsRules::new(&rules.authorization, creators);
    let mut users = BTreeMap::new();
    let mut users_default = Int::from(0);
    let mut notifications = NotificationPowerLevels::new();
    match state_content(conn, room_id, "m.room.power_levels")? {
        Some(pl) => {
            let content = pl.get("content");
            if let Some(map) = content
                .and_then(|c| c.get("users"))
                .and_then(Value::as_object)
            {
                for (user, level) in map {
                    if let (Ok(user), Some(level)) = (UserId::parse(user), int(Some(level))) {
                        users.insert(user, level);
                    }
                }
            }
            if let Some(d) = int(content.and_then(|c| c.get("users_default"))) {
                users_default = d;
            }
            if let Some(room) = int(content.and_then(|c| c.pointer("/notifications/room"))) {
                notifications.room = room;
            }
        }
        None => {
            // No power levels event: the creator has 100, everyone else 0.
            if let Some(c) = creator {
                users.insert(c, Int::from(100));
            }
        }
    }
    Ok(Some(PushConditionPowerLevelsCtx::new(
        users,
        users_default,
        notifications,
        pl_rules,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_thread_relations_make_a_thread() {
        assert_eq!(thread_root(Some("$root"), Some("m.thread")), Some("$root"));
        assert_eq!(thread_root(Some("$root"), Some("m.annotation")), None);
        assert_eq!(thread_root(None, None), None);
    }
}
