//! Simplified sliding sync request bodies (MSC4186): the body as the endpoint reads it, the
//! parameters carried over from the connection's previous request, the rooms its lists'
//! ranges and its subscriptions select, with the parameters merged for each, and the
//! `required_state` rules matched against state entries.
//!
//! Input: the body, then optionally a NUL byte and the previous request's body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use neurite_core::fuzzing::{required_state_matches, sliding_sync_request, sliding_sync_rooms};

const USER: &str = "@alice:example.org";

fuzz_target!(|data: &[u8]| {
    let (body, stored) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let stored = stored.and_then(|s| serde_json::from_slice::<serde_json::Value>(s).ok());
    let Some((req, _since)) = sliding_sync_request(body, stored.as_ref()) else {
        return;
    };
    let rooms: Vec<String> = (0..16).map(|i| format!("!room{i}:example.org")).collect();
    let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let wanted = sliding_sync_rooms(&req, &rooms);
    for params in wanted.values() {
        for (ty, key) in [
            ("m.room.member", USER),
            ("m.room.member", "@bob:example.org"),
            ("m.room.name", ""),
            ("m.room.create", ""),
            ("*", "*"),
        ] {
            required_state_matches(&params.required_state, ty, key, USER);
        }
    }
});
