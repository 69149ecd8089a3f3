//! Globs: the `*` patterns of event filters (`types`, `not_types`), compared with a plain
//! dynamic-programming matcher, filters as clients send them, and push rules, whose content
//! rules match a glob against message bodies.
//!
//! Input, split at NUL bytes: pattern, event type (or message body), filter JSON, push rule
//! body (a content rule made with the pattern when empty), stored push rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use neurite_core::fuzzing::{Filter, client_body, push_actions, type_matches};

/// Whether `text` matches `pattern`, `*` standing for any run of characters: the table of
/// which prefixes of one match which prefixes of the other.
fn reference(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // row[j]: the pattern so far matches the first j characters of the text.
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for c in &p {
        let mut next = vec![false; t.len() + 1];
        if *c == '*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = row[j - 1] && t[j - 1] == *c;
            }
        }
        row = next;
    }
    row[t.len()]
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    fn text(b: Option<&[u8]>) -> Option<&str> {
        std::str::from_utf8(b.unwrap_or_default()).ok()
    }
    let (Some(pattern), Some(ty)) = (text(parts.next()), text(parts.next())) else {
        return;
    };
    let matched = type_matches(pattern, ty);
    if pattern.len() * ty.len() <= 1 << 16 {
        assert_eq!(
            matched,
            reference(pattern, ty),
            "{pattern:?} against {ty:?}"
        );
    }

    let filter = parts.next().unwrap_or_default();
    if let Some(filter) = client_body::<Filter>(filter) {
        filter.presence.allows_type(ty);
        filter.account_data.allows_type(ty);
        filter.room.allows_room(ty);
        filter.room.timeline.allows_room(ty);
    }

    let rule = parts.next().unwrap_or_default();
    let stored = text(parts.next());
    let content_rule;
    let rule = if rule.is_empty() {
        content_rule = serde_json::json!({ "pattern": pattern, "actions": ["notify"] }).to_string();
        content_rule.as_bytes()
    } else {
        rule
    };
    let event = serde_json::json!({
        "type": "m.room.message",
        "sender": "@bob:example.org",
        "room_id": "!room:example.org",
        "event_id": "$event",
        "origin_server_ts": 1,
        "content": { "msgtype": "m.text", "body": ty },
    })
    .to_string();
    for kind in ["content", "override"] {
        let _ = push_actions(stored.filter(|s| !s.is_empty()), kind, "rule", rule, &event);
    }
});
