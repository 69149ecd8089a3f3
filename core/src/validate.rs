//! The spec's grammars and limits for what clients send, checked once at the edge.
//!
//! The client API's extractors apply these to every path parameter (by name) and to the
//! body types that carry identifiers ([`UserIdParam`], [`EventType`], [`StateKey`],
//! [`DeviceId`], [`Limit`]); handlers of state events call [`state_content`] before anything
//! is stored. A request that fails gets a 4xx Matrix error and stores nothing.
//!
//! Limits: identifiers the spec leaves open (event types, state keys, transaction ids, device
//! ids, and any other path parameter naming a room, event, user or rule) are at most
//! [`MAX_IDENTIFIER_BYTES`] bytes; display names at most [`MAX_DISPLAYNAME_CHARS`]
//! characters; request URLs at most [`MAX_URI_BYTES`] bytes.

use std::borrow::Cow;

use ruma::{OwnedUserId, RoomAliasId, UserId};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::{ErrorCode, MatrixError};

/// Longest identifier in bytes (the spec's limit for user, room and event ids, applied to
/// the other identifiers too).
pub const MAX_IDENTIFIER_BYTES: usize = 255;
/// Longest display name, in characters.
pub const MAX_DISPLAYNAME_CHARS: usize = 256;
/// Longest request URL (path and query), in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Prefix of the deserialisation errors of the types below: the JSON extractor answers them
/// with `M_INVALID_PARAM` rather than `M_BAD_JSON`.
pub(crate) const INVALID_PARAM: &str = "invalid parameter: ";

fn too_long(what: &str) -> MatrixError {
    MatrixError::invalid_param(format!(
        "{what} is longer than {MAX_IDENTIFIER_BYTES} bytes"
    ))
}

/// An identifier of at most [`MAX_IDENTIFIER_BYTES`] bytes without control characters;
/// empty only if `may_be_empty`.
pub fn identifier(what: &str, value: &str, may_be_empty: bool) -> Result<(), MatrixError> {
    if value.len() > MAX_IDENTIFIER_BYTES {
        return Err(too_long(what));
    }
    if value.is_empty() && !may_be_empty {
        return Err(MatrixError::invalid_param(format!("{what} is empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(MatrixError::invalid_param(format!(
            "{what} holds control characters"
        )));
    }
    Ok(())
}

/// An event type (also account data and to-device types).
pub fn event_type(value: &str) -> Result<(), MatrixError> {
    identifier("The event type", value, false)
}

/// A state key (may be empty).
pub fn state_key(value: &str) -> Result<(), MatrixError> {
    identifier("The state key", value, true)
}

/// A user id by the spec's grammar: `@localpart:server`, the localpart made of printable
/// ASCII other than `:` (which admits historical ids), a valid server name, 255 bytes at
/// most. Whitespace, control and format characters (bidi overrides, zero-width joiners) and
/// anything beyond ASCII are refused.
pub fn user_id(value: &str) -> Result<OwnedUserId, MatrixError> {
    let bad = || MatrixError::invalid_param(format!("Invalid user id {value:?}"));
    if value.len() > MAX_IDENTIFIER_BYTES {
        return Err(bad());
    }
    let (localpart, _) = value
        .strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(bad)?;
    if localpart.is_empty() || !localpart.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad());
    }
    UserId::parse(value).map_err(|_| bad())
}

/// The local part of an alias given to `createRoom`: printable ASCII without `:`, and the
/// whole alias within the identifier limit.
pub fn alias_localpart(localpart: &str, server: &str) -> Result<String, MatrixError> {
    let bad = || MatrixError::invalid_param("Invalid room alias name");
    if localpart.is_empty()
        || !localpart
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
    {
        return Err(bad());
    }
    let alias = format!("#{localpart}:{server}");
    if alias.len() > MAX_IDENTIFIER_BYTES || RoomAliasId::parse(&alias).is_err() {
        return Err(bad());
    }
    Ok(alias)
}

/// A display name: at most [`MAX_DISPLAYNAME_CHARS`] characters.
pub fn displayname(value: &str) -> Result<(), MatrixError> {
    if value.chars().count() > MAX_DISPLAYNAME_CHARS {
        return Err(MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            ErrorCode::TooLarge,
            format!("Display names are at most {MAX_DISPLAYNAME_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks a path parameter by its name in the route; parameters not named here are free.
pub fn path_param(name: &str, value: &str) -> Result<(), MatrixError> {
    match name {
        "ty" => event_type(value),
        "key" => state_key(value),
        "txn" => identifier("The transaction id", value, false),
        "device" => identifier("The device id", value, false),
        "room" | "event" | "user" | "alias" | "rel" | "tag" | "rule" | "scope" | "kind"
        | "session" | "version" | "id" | "field" => identifier(name, value, false),
        _ => Ok(()),
    }
}

fn integer(value: &Value) -> bool {
    // Canonical JSON integers: whole numbers within ±(2^53 - 1).
    const MAX: i64 = (1 << 53) - 1;
    value.as_i64().is_some_and(|n| (-MAX..=MAX).contains(&n))
}

fn shape(ty: &str, what: impl std::fmt::Display) -> MatrixError {
    MatrixError::bad_json(format!("Invalid {ty} content: {what}"))
}

fn string_in(
    ty: &str,
    content: &Map<String, Value>,
    key: &str,
    allowed: &[&str],
) -> Result<(), MatrixError> {
    match content.get(key).and_then(Value::as_str) {
        Some(v) if allowed.is_empty() || allowed.contains(&v) => Ok(()),
        _ if allowed.is_empty() => Err(shape(ty, format_args!("{key} must be a string"))),
        _ => Err(shape(
            ty,
            format_args!("{key} must be one of {}", allowed.join(", ")),
        )),
    }
}

fn optional_string(ty: &str, content: &Map<String, Value>, key: &str) -> Result<(), MatrixError> {
    match content.get(key) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(shape(ty, format_args!("{key} must be a string"))),
    }
}

fn power_levels(content: &Map<String, Value>) -> Result<(), MatrixError> {
    let ty = "m.room.power_levels";
    for key in [
        "ban",
        "events_default",
        "invite",
        "kick",
        "redact",
        "state_default",
        "users_default",
    ] {
        if let Some(v) = content.get(key)
            && !integer(v)
        {
            return Err(shape(ty, format_args!("{key} must be an integer")));
        }
    }
    for key in ["events", "users", "notifications"] {
        let Some(v) = content.get(key) else { continue };
        let map = v
            .as_object()
            .ok_or_else(|| shape(ty, format_args!("{key} must be an object")))?;
        for (name, level) in map {
            if !integer(level) {
                return Err(shape(ty, format_args!("{key}.{name} must be an integer")));
            }
            if key == "users" && user_id(name).is_err() {
                return Err(shape(ty, format_args!("{name:?} is not a user id")));
            }
        }
    }
    Ok(())
}

/// Checks the content of a state event of a type the spec defines against its schema (the
/// fields servers and clients act on); other types pass.
pub fn state_content(ty: &str, content: &Map<String, Value>) -> Result<(), MatrixError> {
    match ty {
        "m.room.join_rules" => string_in(
            ty,
            content,
            "join_rule",
            &[
                "public",
                "knock",
                "invite",
                "private",
                "restricted",
                "knock_restricted",
            ],
        ),
        "m.room.history_visibility" => string_in(
            ty,
            content,
            "history_visibility",
            &["invited", "joined", "shared", "world_readable"],
        ),
        "m.room.guest_access" => string_in(ty, content, "guest_access", &["can_join", "forbidden"]),
        "m.room.member" => string_in(
            ty,
            content,
            "membership",
            &["invite", "join", "knock", "leave", "ban"],
        ),
        "m.room.power_levels" => power_levels(content),
        "m.room.name" => string_in(ty, content, "name", &[]),
        "m.room.topic" => string_in(ty, content, "topic", &[]),
        "m.room.avatar" => optional_string(ty, content, "url"),
        "m.room.encryption" => string_in(ty, content, "algorithm", &[]),
        "m.room.canonical_alias" => {
            let alias_ok = |v: &Value| v.as_str().is_some_and(|a| RoomAliasId::parse(a).is_ok());
            if content.get("alias").is_some_and(|a| !alias_ok(a)) {
                return Err(shape(ty, "alias must be a room alias"));
            }
            match content.get("alt_aliases") {
                None => Ok(()),
                Some(Value::Array(all)) if all.iter().all(alias_ok) => Ok(()),
                Some(_) => Err(shape(ty, "alt_aliases must be a list of room aliases")),
            }
        }
        "m.room.server_acl" => {
            for key in ["allow", "deny"] {
                match content.get(key) {
                    None => {}
                    Some(Value::Array(all)) if all.iter().all(Value::is_string) => {}
                    Some(_) => {
                        return Err(shape(ty, format_args!("{key} must be a list of strings")));
                    }
                }
            }
            match content.get("allow_ip_literals") {
                None | Some(Value::Bool(_)) => Ok(()),
                Some(_) => Err(shape(ty, "allow_ip_literals must be a boolean")),
            }
        }
        "m.room.pinned_events" => match content.get("pinned") {
            Some(Value::Array(all)) if all.iter().all(Value::is_string) => Ok(()),
            _ => Err(shape(ty, "pinned must be a list of event ids")),
        },
        _ => Ok(()),
    }
}

fn invalid<E: serde::de::Error>(err: MatrixError) -> E {
    E::custom(format!("{INVALID_PARAM}{}", err.message))
}

/// A user id in a request body, checked by [`user_id`].
#[derive(Debug, Clone)]
pub struct UserIdParam(pub OwnedUserId);

impl<'de> Deserialize<'de> for UserIdParam {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        user_id(&s).map(UserIdParam).map_err(invalid)
    }
}

/// An event type in a request body, checked by [`event_type`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType(pub String);

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        event_type(&s).map_err(invalid)?;
        Ok(EventType(s))
    }
}

/// A state key in a request body, checked by [`state_key`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateKey(pub String);

impl<'de> Deserialize<'de> for StateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        state_key(&s).map_err(invalid)?;
        Ok(StateKey(s))
    }
}

/// A device id in a request body, within the identifier limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId(pub String);

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        identifier("The device id", &s, false).map_err(invalid)?;
        Ok(DeviceId(s))
    }
}

/// A `limit` in a request body: a non-negative integer (a string or a negative number is
/// refused, not replaced by a default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub u64);

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        v.as_u64().map(Limit).ok_or_else(|| {
            invalid(MatrixError::invalid_param(
                "limit must be a non-negative integer",
            ))
        })
    }
}

/// A `limit` query parameter: absent gives `default`, a non-negative integer is capped at
/// `max`, anything else is `M_INVALID_PARAM`.
pub fn limit_param(value: Option<&str>, default: usize, max: usize) -> Result<usize, MatrixError> {
    match value {
        None => Ok(default),
        Some(l) => l
            .parse::<u64>()
            .map(|n| n.min(max as u64) as usize)
            .map_err(|_| MatrixError::invalid_param("limit must be a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_ids_follow_the_grammar() {
        assert!(user_id("@alice:example.org").is_ok());
        assert!(user_id("@Historic!Name:example.org").is_ok());
        for bad in [
            "@bob smith:example.org",
            "@bob\u{7}:example.org",
            "@b\u{202e}ob:example.org",
            "@\u{1F600}:example.org",
            "@a\u{200d}b:example.org",
            "@:example.org",
            "bob",
            "@bob:bad server",
        ] {
            assert!(user_id(bad).is_err(), "{bad:?}");
        }
        assert!(user_id(&format!("@{}:e.org", "a".repeat(250))).is_err());
    }

    #[test]
    fn spec_state_types_have_their_shape() {
        let c = |v: Value| v.as_object().cloned().unwrap();
        assert!(state_content("m.room.join_rules", &c(json!({ "join_rule": "invite" }))).is_ok());
        assert!(state_content("m.room.join_rules", &c(json!({ "join_rule": 1 }))).is_err());
        assert!(state_content("m.room.power_levels", &c(json!({ "ban": 50 }))).is_ok());
        assert!(state_content("m.room.power_levels", &c(json!({ "ban": "50" }))).is_err());
        assert!(state_content("m.room.power_levels", &c(json!({ "ban": 1.5 }))).is_err());
        assert!(
            state_content(
                "m.room.power_levels",
                &c(json!({ "ban": 9_007_199_254_740_992i64 }))
            )
            .is_err()
        );
        assert!(state_content("com.example", &c(json!({ "anything": [1] }))).is_ok());
    }

    #[test]
    fn limits_are_non_negative_integers() {
        assert_eq!(limit_param(None, 10, 100).unwrap(), 10);
        assert_eq!(limit_param(Some("500"), 10, 100).unwrap(), 100);
        assert!(limit_param(Some("-1"), 10, 100).is_err());
        assert!(limit_param(Some("ten"), 10, 100).is_err());
    }
}
