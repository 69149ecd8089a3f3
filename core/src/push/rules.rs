//! Each user's push rule set: reading it from their `m.push_rules` account data (the server
//! defaults when they never changed it), the rule set as clients see it, and the changes
//! `/pushrules` makes to it.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use ruma::{
    OwnedUserId, RoomId, UserId,
    push::{
        Action, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
        NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind, Ruleset,
    },
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::PushRules;
use crate::{
    error::{MatrixError, Result},
    storage::{push::PUSH_RULES_TYPE, user_data},
};

/// The rule kinds of the spec, in order of priority.
pub const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

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
pub(super) fn cached_ruleset(user: &UserId, stored: Option<&str>) -> Arc<Ruleset> {
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
}
