//! Push rules: `/pushrules/...`.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiResult, AppState, Auth, Json, Path, Query};
use crate::{
    error::MatrixError,
    push::{self, RuleChange},
};

type RulePath = Path<(String, String, String)>;

/// `GET /pushrules/`: the user's whole rule set.
pub(super) async fn all_rules(
    State(state): State<AppState>,
    Auth(session): Auth,
) -> ApiResult<Json<Value>> {
    let rules = state.push.ruleset(&session.user_id).await?;
    Ok(Json(json!({ "global": push::client_json(&rules) })))
}

/// `GET /pushrules/global/`: the rules of the one scope.
pub(super) async fn scope_rules(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Json<Value>> {
    if scope != "global" {
        return Err(MatrixError::invalid_param(
            "The only push rule scope is \"global\"",
        ));
    }
    let rules = state.push.ruleset(&session.user_id).await?;
    Ok(Json(push::client_json(&rules)))
}

/// `GET /pushrules/global/{kind}/{ruleId}`.
pub(super) async fn get_rule(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((scope, kind, rule)): RulePath,
) -> ApiResult<Json<Value>> {
    push::check_path(&scope, &kind)?;
    let rules = state.push.ruleset(&session.user_id).await?;
    Ok(Json(push::rule_json(&rules, &kind, &rule)?))
}

/// Where to place a new rule.
#[derive(Deserialize)]
pub(super) struct Placement {
    before: Option<String>,
    after: Option<String>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}`: creates or replaces a user rule.
pub(super) async fn put_rule(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((scope, kind, rule)): RulePath,
    Query(placement): Query<Placement>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    push::check_path(&scope, &kind)?;
    if rule.starts_with('.') {
        return Err(MatrixError::invalid_param(
            "Rule ids starting with a dot are reserved for server-default rules",
        ));
    }
    let change = RuleChange::Put {
        rule: push::new_rule(&kind, &rule, &body)?,
        after: placement.after.filter(|s| !s.is_empty()),
        before: placement.before.filter(|s| !s.is_empty()),
    };
    state
        .push
        .change(&session.user_id, &kind, &rule, change)
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /pushrules/global/{kind}/{ruleId}`: deletes a user rule.
pub(super) async fn delete_rule(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((scope, kind, rule)): RulePath,
) -> ApiResult<Json<Value>> {
    push::check_path(&scope, &kind)?;
    state
        .push
        .change(&session.user_id, &kind, &rule, RuleChange::Delete)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /pushrules/global/{kind}/{ruleId}/enabled`.
pub(super) async fn get_enabled(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((scope, kind, rule)): RulePath,
) -> ApiResult<Json<Value>> {
    push::check_path(&scope, &kind)?;
    let rules = state.push.ruleset(&session.user_id).await?;
    let rule = push::rule_json(&rules, &kind, &rule)?;
    Ok(Json(
        json!({ "enabled": rule.get("enabled").cloned().unwrap_or(json!(true)) }),
    ))
}

/// `PUT /pushrules/global/{kind}/{ruleId}/enabled`.
pub(super) async fn put_enabled(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((scope, kind, rule)): RulePath,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    push::check_path(&scope, &kind)?;
    let Some(Value::Bool(enabled)) = body.get("enabled") else {
        return Err(MatrixError::bad_json("enabled must be true or false"));
    };
    state
        .push
        .change(
            &session.user_id,
            &kind,
            &rule,
            RuleChange::Enabled(*enabled),
        )
        .await?;
    Ok(Json(json!({})))
}

/// `GET /pushrules/global/{kind}/{ruleId}/actions`.
pub(super) async fn get_actions(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((scope, kind, rule)): RulePath,
) -> ApiResult<Json<Value>> {
    push::check_path(&scope, &kind)?;
    let rules = state.push.ruleset(&session.user_id).await?;
    let rule = push::rule_json(&rules, &kind, &rule)?;
    Ok(Json(
        json!({ "actions": rule.get("actions").cloned().unwrap_or(json!([])) }),
    ))
}

/// `PUT /pushrules/global/{kind}/{ruleId}/actions`.
pub(super) async fn put_actions(
    State(state): State<AppState>,
    Auth(session): Auth,
    Path((scope, kind, rule)): RulePath,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    push::check_path(&scope, &kind)?;
    let actions = push::parse_actions(body.get("actions"))?;
    state
        .push
        .change(&session.user_id, &kind, &rule, RuleChange::Actions(actions))
        .await?;
    Ok(Json(json!({})))
}
