//! The HTTP plumbing both APIs share: the state every handler gets, the extractors that turn
//! a request that cannot be parsed into a Matrix error (never a panic or a 500), and the
//! encoding of path segments and query strings.
//!
//! The client API ([`crate::client`]) and the server-server API ([`crate::federation`]) each
//! build their router on these; neither reaches into the other.

mod extract;

use std::sync::Arc;

#[cfg(feature = "fuzzing")]
pub(crate) use extract::parse_body;
pub use extract::{Json, OptionalJson, Path, Query};

use crate::{error::MatrixError, services::Services};

/// Shared state of every handler.
pub type AppState = Arc<Services>;

/// The result type of handlers.
pub type ApiResult<T> = Result<T, MatrixError>;

/// Characters escaped in a path segment: all but RFC 3986's unreserved ones.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// Every value of `key` in a query string, decoded, in order.
pub fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// A query string (without the `?`) holding `pairs` in order, each name and value encoded.
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_round_trip() {
        let q = query_string([("ver", "10"), ("ver", "12"), ("room_alias", "#a b:c&d")]);
        assert_eq!(query_values(Some(&q), "ver"), ["10", "12"]);
        assert_eq!(query_values(Some(&q), "room_alias"), ["#a b:c&d"]);
        assert!(query_values(None, "ver").is_empty());
    }

    #[test]
    fn path_segments_keep_only_unreserved_characters() {
        assert_eq!(percent_encode("!r:x.y"), "%21r%3Ax.y");
        assert_eq!(percent_encode("a/b ~_-"), "a%2Fb%20~_-");
    }
}
