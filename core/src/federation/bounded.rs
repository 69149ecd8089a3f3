//! JSON from peers, read within bounds: a look at a body's shape before anything is built
//! from it, and answers whose event lists are cut to what was asked for while they are read.
//!
//! A few megabytes of `[0,0,0,…]` make millions of values once parsed; counting them first
//! costs one pass over the bytes and no memory.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Most values (strings, numbers, keys, arrays, objects…) in a federation request body.
pub const MAX_REQUEST_VALUES: usize = 100_000;
/// Most values in a federation answer read whole.
pub const MAX_RESPONSE_VALUES: usize = 400_000;
/// Deepest nesting accepted (serde_json stops at 128 anyway; events need far less).
pub const MAX_DEPTH: usize = 64;

/// Why a body was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeError {
    /// More values than allowed.
    TooManyValues,
    /// Nested deeper than allowed.
    TooDeep,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::TooManyValues => write!(f, "the JSON has too many values"),
            ShapeError::TooDeep => write!(f, "the JSON is nested too deeply"),
        }
    }
}

/// Checks, in one pass over the bytes, that a JSON text has at most `max_values` values and
/// keys and nests at most `max_depth` deep. It does not check that the text is JSON; the
/// parser that comes next does.
pub fn check_shape(bytes: &[u8], max_values: usize, max_depth: usize) -> Result<(), ShapeError> {
    let mut values = 0usize;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // Whether the previous byte outside strings was part of a number or literal.
    let mut in_scalar = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        let starts = match b {
            b'"' => {
                in_string = true;
                in_scalar = false;
                true
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ShapeError::TooDeep);
                }
                in_scalar = false;
                true
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                in_scalar = false;
                false
            }
            b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' => {
                in_scalar = false;
                false
            }
            _ => !std::mem::replace(&mut in_scalar, true),
        };
        if starts {
            values += 1;
            if values > max_values {
                return Err(ShapeError::TooManyValues);
            }
        }
    }
    Ok(())
}

/// Reads the arrays named in `fields` from a JSON object, keeping at most the given number of
/// elements of each; further elements and every other field are skipped without being built.
/// A field that is absent or not an array gives an empty list.
pub fn capped_arrays(
    bytes: &[u8],
    fields: &[(&str, usize)],
) -> serde_json::Result<Vec<Vec<Value>>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let out = de.deserialize_map(Fields { fields })?;
    de.end()?;
    Ok(out)
}

struct Fields<'a> {
    fields: &'a [(&'a str, usize)],
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Vec<Vec<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![Vec::new(); self.fields.len()];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.fields.iter().position(|(name, _)| *name == key) {
                Some(i) => out[i] = map.next_value_seed(Capped(self.fields[i].1))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// An array cut to its first `.0` elements (anything else: an empty list).
struct Capped(usize);

impl<'de> DeserializeSeed<'de> for Capped {
    type Value = Vec<Value>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Capped {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while out.len() < self.0 {
            match seq.next_element::<Value>()? {
                Some(v) => out.push(v),
                None => return Ok(out),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shape_counts_values_and_depth_without_parsing() {
        let text = br#"{"a": [1, 2.5, "x,y]", true, null], "b": {"c": "\"}"}}"#;
        // Keys a, b, c; the outer object, the array, its five items, the inner object, "\"}".
        assert_eq!(check_shape(text, 12, 2), Ok(()));
        assert_eq!(check_shape(text, 11, 2), Err(ShapeError::TooManyValues));
        assert_eq!(check_shape(text, 12, 1), Err(ShapeError::TooDeep));
        let junk = "[0,".repeat(1000) + "0" + &"]".repeat(1000);
        assert_eq!(
            check_shape(junk.as_bytes(), usize::MAX, MAX_DEPTH),
            Err(ShapeError::TooDeep)
        );
        let flat = format!("[{}0]", "0,".repeat(200_000));
        assert_eq!(
            check_shape(flat.as_bytes(), MAX_REQUEST_VALUES, MAX_DEPTH),
            Err(ShapeError::TooManyValues)
        );
    }

    #[test]
    fn capped_arrays_keep_what_was_asked_for() {
        let events: Vec<Value> = (0..500).map(|i| json!({ "n": i })).collect();
        let body = json!({ "events": events, "other": [1, 2, 3], "auth_chain": "nope" });
        let bytes = serde_json::to_vec(&body).expect("json");
        let got = capped_arrays(&bytes, &[("events", 100), ("auth_chain", 10), ("pdus", 5)])
            .expect("parsed");
        assert_eq!(got[0].len(), 100);
        assert_eq!(got[0][99], json!({ "n": 99 }));
        assert!(got[1].is_empty() && got[2].is_empty());
        assert!(capped_arrays(b"[1]", &[("events", 1)]).is_err());
        assert!(capped_arrays(b"{\"events\": [1,", &[("events", 1)]).is_err());
    }
}
