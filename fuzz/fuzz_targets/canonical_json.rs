//! Canonical JSON as peers send it: the value and depth bounds checked before a federation
//! body is parsed, the parse into canonical JSON, and the capped reading of answers.
//!
//! Checks that the bounds never count fewer values or levels than the parsed JSON has, and
//! that canonical JSON serialises to a fixed point.

#![no_main]

use libfuzzer_sys::fuzz_target;
use neurite_core::fuzzing::{CanonicalJsonValue, ShapeError, capped_arrays, check_shape};
use serde_json::Value;

/// Values (keys included) and nesting depth of a parsed JSON value, as `check_shape` counts.
fn measure(value: &Value) -> (usize, usize) {
    match value {
        Value::Array(items) => items.iter().fold((1, 1), |(n, d), v| {
            let (vn, vd) = measure(v);
            (n + vn, d.max(vd + 1))
        }),
        Value::Object(map) => map.values().fold((1, 1), |(n, d), v| {
            let (vn, vd) = measure(v);
            (n + 1 + vn, d.max(vd + 1))
        }),
        _ => (1, 0),
    }
}

fuzz_target!(|data: &[u8]| {
    let shape = check_shape(data, usize::MAX, usize::MAX);
    assert_eq!(shape, Ok(()), "without limits every text passes");
    let _ = capped_arrays(data, &[("pdus", 50), ("edus", 100), ("auth_chain", 3)]);

    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let (values, depth) = measure(&value);
        // One value and one level fewer than the JSON has must be refused.
        assert_eq!(
            check_shape(data, values - 1, usize::MAX),
            Err(ShapeError::TooManyValues),
            "{values} values counted as fewer"
        );
        if depth > 0 {
            assert_eq!(
                check_shape(data, usize::MAX, depth - 1),
                Err(ShapeError::TooDeep),
                "depth {depth} counted as less"
            );
        }
    }

    let Ok(canonical) = serde_json::from_slice::<CanonicalJsonValue>(data) else {
        return;
    };
    let text = serde_json::to_vec(&canonical).expect("canonical JSON serialises");
    let again: CanonicalJsonValue =
        serde_json::from_slice(&text).expect("canonical JSON parses again");
    assert_eq!(again, canonical);
    assert_eq!(serde_json::to_vec(&again).expect("serialises"), text);
});
