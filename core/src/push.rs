//! Push rules: each user's rule set (`/pushrules`), and their evaluation as events join a
//! room's timeline, which feeds the unread notification counts of `/sync`.
//!
//! A user's rules live in their `m.push_rules` account data (as `{"global": ruleset}`), so
//! clients see every change in `/sync` too. A user who never changed a rule has no stored
//! copy and gets the server defaults. The rule logic itself is ruma's [`Ruleset`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, LazyLock, Mutex},
};

use futures::FutureExt;
use ruma::{
    Int, OwnedUserId, RoomId, UInt, UserId,
    power_levels::NotificationPowerLevels,
    push::{
        Action, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
        NewSimplePushRule, PushCondition, PushConditionPowerLevelsCtx, PushConditionRoomCtx,
        RemovePushRuleError, RuleKind, Ruleset,
    },
    room_version_rules::{RoomPowerLevelsRules, RoomVersionRules},
    serde::Raw,
};
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    error::{MatrixError, Result},
    notifier::Notifier,
    storage::{
        Db, events as ev_store, now_ms,
        push::{self as store, PUSH_RULES_TYPE},
        pushers as pusher_store, state as state_store, user_data,
    },
};

/// The rule kinds of the spec, in order of priority.
pub const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// The push rule service.
#[derive(Clone)]
pub struct PushRules {
    db: Db,
    notifier: Arc<Notifier>,
}

/// A change to one rule of a user's rule set.
#[derive(Debug)]
pub enum RuleChange {
    /// Create or replace a user rule, optionally placed relative to another.
    Put {
        /// The rule, from the request body.
        rule: NewPushRule,
        /// Place it right after this rule.
        after: Option<String>,
        /// Place it right before this rule.
        before: Option<String>,
    },
    /// Delete a user rule.
    Delete,
    /// Enable or disable a rule.
    Enabled(bool),
    /// Replace a rule's actions.
    Actions(Vec<Action>),
}

#[derive(Deserialize)]
struct Stored {
    global: Ruleset,
}

/// A user's rule set from its stored form (`None`: never changed, the server defaults).
/// Server-default rules are brought up to date, keeping the user's enabled flags and actions.
pub fn ruleset_from_stored(user: &UserId, stored: Option<&str>) -> Ruleset {
    let defaults = Ruleset::server_default(user);
    match stored.map(serde_json::from_str::<Stored>) {
        Some(Ok(Stored { global: mut rules })) => {
            rules.update_with_server_default(defaults);
            rules
        }
        Some(Err(e)) => {
            tracing::warn!(user = %user, error = %e, "unreadable push rules, using the defaults");
            defaults
        }
        None => defaults,
    }
}

/// [`ruleset_from_stored`], remembered per user: building the defaults for every recipient
/// of every event would cost more than evaluating them. An entry is reused only while the
/// stored rules are exactly the same.
fn cached_ruleset(user: &UserId, stored: Option<&str>) -> Arc<Ruleset> {
    type Cache = HashMap<OwnedUserId, (Option<String>, Arc<Ruleset>)>;
    static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);
    const MAX_USERS: usize = 256;
    if let Ok(cache) = CACHE.lock()
        && let Some((key, rules)) = cache.get(user)
        && key.as_deref() == stored
    {
        return rules.clone();
    }
    let rules = Arc::new(ruleset_from_stored(user, stored));
    if let Ok(mut cache) = CACHE.lock() {
        if cache.len() >= MAX_USERS {
            cache.clear();
        }
        cache.insert(user.to_owned(), (stored.map(str::to_owned), rules.clone()));
    }
    rules
}

/// A rule set as clients see it: every kind present, even when empty.
pub fn client_json(rules: &Ruleset) -> Value {
    let mut value = serde_json::to_value(rules).unwrap_or_else(|_| json!({}));
    if let Some(obj) = value.as_object_mut() {
        for kind in KINDS {
            obj.entry(kind).or_insert_with(|| json!([]));
        }
    }
    value
}

/// The `m.push_rules` account data content of a user with stored rules `stored`.
pub fn account_data_content(user: &UserId, stored: Option<&str>) -> Value {
    json!({ "global": client_json(&ruleset_from_stored(user, stored)) })
}

fn rule_kind(kind: &str) -> Result<RuleKind> {
    Ok(match kind {
        "override" => RuleKind::Override,
        "content" => RuleKind::Content,
        "room" => RuleKind::Room,
        "sender" => RuleKind::Sender,
        "underride" => RuleKind::Underride,
        _ => return Err(MatrixError::invalid_param(format!("Unknown rule kind {kind}")).into()),
    })
}

/// Checks the scope and kind of a rule path.
pub fn check_path(scope: &str, kind: &str) -> Result<()> {
    if scope != "global" {
        return Err(MatrixError::invalid_param("The only push rule scope is \"global\"").into());
    }
    rule_kind(kind).map(|_| ())
}

/// Parses a list of actions. Besides `notify` and tweaks, the legacy `dont_notify` and
/// `coalesce` are accepted (and do nothing); anything else is `400 M_BAD_JSON`.
pub fn parse_actions(value: Option<&Value>) -> Result<Vec<Action>> {
    let Some(Value::Array(list)) = value else {
        return Err(MatrixError::bad_json("actions must be a list").into());
    };
    for action in list {
        let known = match action {
            Value::String(s) => matches!(s.as_str(), "notify" | "dont_notify" | "coalesce"),
            Value::Object(o) => o.get("set_tweak").is_some_and(Value::is_string),
            _ => false,
        };
        if !known {
            return Err(MatrixError::bad_json(format!("Unknown push rule action {action}")).into());
        }
    }
    serde_json::from_value(Value::Array(list.clone()))
        .map_err(|e| MatrixError::bad_json(format!("Invalid actions: {e}")).into())
}

/// Builds the rule a `PUT /pushrules/global/{kind}/{ruleId}` body describes.
pub fn new_rule(kind: &str, rule_id: &str, body: &Map<String, Value>) -> Result<NewPushRule> {
    let actions = parse_actions(body.get("actions"))?;
    let conditions = || -> Result<Vec<PushCondition>> {
        match body.get("conditions") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| MatrixError::bad_json(format!("Invalid conditions: {e}")).into()),
        }
    };
    let id = rule_id.to_owned();
    Ok(match rule_kind(kind)? {
        RuleKind::Override => {
            NewPushRule::Override(NewConditionalPushRule::new(id, conditions()?, actions))
        }
        RuleKind::Underride => {
            NewPushRule::Underride(NewConditionalPushRule::new(id, conditions()?, actions))
        }
        RuleKind::Content => {
            let Some(Value::String(pattern)) = body.get("pattern") else {
                return Err(MatrixError::bad_json("A content rule needs a pattern").into());
            };
            NewPushRule::Content(NewPatternedPushRule::new(id, pattern.clone(), actions))
        }
        RuleKind::Room => {
            let room = RoomId::parse(rule_id).map_err(|_| {
                MatrixError::invalid_param("The rule id of a room rule is a room id")
            })?;
            NewPushRule::Room(NewSimplePushRule::new(room, actions))
        }
        RuleKind::Sender => {
            let user = UserId::parse(rule_id).map_err(|_| {
                MatrixError::invalid_param("The rule id of a sender rule is a user id")
            })?;
            NewPushRule::Sender(NewSimplePushRule::new(user, actions))
        }
        _ => return Err(MatrixError::invalid_param("Unknown rule kind").into()),
    })
}

fn insert_error(e: InsertPushRuleError) -> MatrixError {
    match e {
        InsertPushRuleError::UnknownRuleId => {
            MatrixError::not_found("The before or after rule does not exist")
        }
        InsertPushRuleError::ServerDefaultRuleId => MatrixError::invalid_param(
            "Rule ids starting with a dot are reserved for server-default rules",
        ),
        other => MatrixError::invalid_param(other.to_string()),
    }
}

fn not_found() -> MatrixError {
    MatrixError::not_found("No such push rule")
}

/// One rule of a rule set as clients see it; `404 M_NOT_FOUND` if absent.
pub fn rule_json(rules: &Ruleset, kind: &str, rule_id: &str) -> Result<Value> {
    client_json(rules)
        .get(kind)
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|r| r.get("rule_id").and_then(Value::as_str) == Some(rule_id))
        })
        .cloned()
        .ok_or_else(|| not_found().into())
}

impl PushRules {
    /// Creates the service.
    pub fn new(db: Db, notifier: Arc<Notifier>) -> Self {
        Self { db, notifier }
    }

    /// A user's rule set.
    pub async fn ruleset(&self, user: &UserId) -> Result<Ruleset> {
        let user = user.to_owned();
        self.db
            .read(move |c| {
                let stored = user_data::get_account_data(c, user.as_str(), "", PUSH_RULES_TYPE)?;
                Ok(ruleset_from_stored(&user, stored.as_deref()))
            })
            .await
    }

    /// Applies one change to a user's rule set and stores the result; long-polling syncs
    /// see the new `m.push_rules` account data.
    pub async fn change(
        &self,
        user: &UserId,
        kind: &str,
        rule_id: &str,
        change: RuleChange,
    ) -> Result<()> {
        let kind = rule_kind(kind)?;
        let (user, rule_id) = (user.to_owned(), rule_id.to_owned());
        self.db
            .write(move |txn| {
                let stored = user_data::get_account_data(txn, user.as_str(), "", PUSH_RULES_TYPE)?;
                let mut rules = ruleset_from_stored(&user, stored.as_deref());
                apply(&mut rules, kind, &rule_id, change)?;
                let content = json!({ "global": client_json(&rules) });
                let pos = txn.next_pos();
                user_data::set_account_data(
                    txn,
                    user.as_str(),
                    "",
                    PUSH_RULES_TYPE,
                    &serde_json::to_string(&content)?,
                    pos,
                )
            })
            .await?;
        self.notifier.notify();
        Ok(())
    }
}

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

fn apply(rules: &mut Ruleset, kind: RuleKind, rule_id: &str, change: RuleChange) -> Result<()> {
    match change {
        RuleChange::Put {
            rule,
            after,
            before,
        } => rules
            .insert(rule, after.as_deref(), before.as_deref())
            .map_err(insert_error)?,
        RuleChange::Delete => rules.remove(kind, rule_id).map_err(|e| match e {
            RemovePushRuleError::ServerDefault => {
                MatrixError::invalid_param("Server-default rules cannot be deleted")
            }
            _ => not_found(),
        })?,
        RuleChange::Enabled(enabled) => rules
            .set_enabled(kind, rule_id, enabled)
            .map_err(|_| not_found())?,
        RuleChange::Actions(actions) => rules
            .set_actions(kind, rule_id, actions)
            .map_err(|_| not_found())?,
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> OwnedUserId {
        UserId::parse("@alice:example.org").expect("user id")
    }

    #[test]
    fn stored_rules_keep_user_rules_and_switches_across_default_updates() {
        let user = alice();
        let mut rules = Ruleset::server_default(&user);
        let rule = new_rule(
            "content",
            "cake",
            &json!({ "actions": ["notify"], "pattern": "cake" })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .expect("rule");
        apply(
            &mut rules,
            RuleKind::Content,
            "cake",
            RuleChange::Put {
                rule,
                after: None,
                before: None,
            },
        )
        .expect("insert");
        apply(
            &mut rules,
            RuleKind::Override,
            ".m.rule.master",
            RuleChange::Enabled(true),
        )
        .expect("enable");
        let stored = json!({ "global": client_json(&rules) }).to_string();

        let loaded = ruleset_from_stored(&user, Some(&stored));
        let json = client_json(&loaded);
        assert_eq!(json["content"][0]["rule_id"], "cake");
        assert_eq!(json["override"][0]["rule_id"], ".m.rule.master");
        assert_eq!(json["override"][0]["enabled"], true);
        for kind in KINDS {
            assert!(json[kind].is_array(), "{kind}");
        }
        // Unreadable stored rules fall back to the defaults rather than failing.
        let fallback = client_json(&ruleset_from_stored(&user, Some("not json")));
        assert_eq!(fallback["override"][0]["enabled"], false);
    }

    #[test]
    fn server_default_rules_cannot_be_deleted() {
        let mut rules = Ruleset::server_default(&alice());
        let err = apply(
            &mut rules,
            RuleKind::Override,
            ".m.rule.master",
            RuleChange::Delete,
        )
        .expect_err("protected");
        assert!(
            matches!(err, crate::error::Error::Matrix(m) if m.errcode == crate::error::ErrorCode::InvalidParam)
        );
    }

    #[test]
    fn actions_accept_legacy_strings_and_refuse_unknown_ones() {
        assert!(parse_actions(Some(&json!(["dont_notify", "coalesce"]))).is_ok());
        assert!(parse_actions(Some(&json!(["notify", { "set_tweak": "highlight" }]))).is_ok());
        assert!(parse_actions(Some(&json!(["ring"]))).is_err());
        assert!(parse_actions(Some(&json!([{ "value": 1 }]))).is_err());
        assert!(parse_actions(None).is_err());
    }

    #[test]
    fn only_thread_relations_make_a_thread() {
        assert_eq!(thread_root(Some("$root"), Some("m.thread")), Some("$root"));
        assert_eq!(thread_root(Some("$root"), Some("m.annotation")), None);
        assert_eq!(thread_root(None, None), None);
    }
}
