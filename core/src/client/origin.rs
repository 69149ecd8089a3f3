//! Which web pages may use the client API.
//!
//! Every app on the phone can reach `127.0.0.1`, and so can every page open in its browser.
//! Native Matrix clients send no `Origin` header; browsers send one with every request that
//! can change something and with every request whose answer a page wants to read. So a
//! request with an `Origin` that is not allowed (`Config::cors_origins`, and loopback pages
//! when `Config::cors_allow_loopback`) is refused outright, and only allowed origins get CORS
//! headers. A `Host` that is a DNS name other than `localhost` is refused too: that is how a
//! page on a rebound DNS name (which the browser treats as its own origin) would reach us.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{config::Config, error::MatrixError};

/// The origins allowed to call the API from a browser.
#[derive(Debug, Clone)]
pub(super) struct OriginPolicy {
    allow_loopback: bool,
    origins: Vec<String>,
}

impl OriginPolicy {
    /// The policy the configuration asks for.
    pub(super) fn from_config(config: &Config) -> Self {
        Self {
            allow_loopback: config.cors_allow_loopback,
            origins: config
                .cors_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a page of `origin` may call the API.
    pub(super) fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        (self.allow_loopback && is_loopback_origin(&origin)) || self.origins.contains(&origin)
    }

    /// Whether a request addressed to `host` (a `Host` header) may be served: IP addresses,
    /// `localhost`, and the hosts of the configured origins.
    fn allows_host(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        if name == "localhost" || is_ip(&name) {
            return true;
        }
        self.origins
            .iter()
            .filter_map(|o| o.split_once("://").map(|(_, rest)| host_name(rest)))
            .any(|h| h == name)
    }
}

/// The host part of `host[:port]` (IPv6 literals keep their brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_ip(name: &str) -> bool {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse::<IpAddr>().is_ok()
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, with any port.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let name = host_name(rest);
    let port = &rest[name.len()..];
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    port_ok && matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// Refuses requests from pages of other origins and requests addressed to other hosts, with
/// `403 M_FORBIDDEN`.
pub(super) async fn guard(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST) {
        let allowed = host.to_str().is_ok_and(|h| policy.allows_host(h));
        if !allowed {
            return MatrixError::forbidden("This server only answers requests for its IP address")
                .into_response();
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| policy.allows(o));
        if !allowed {
            tracing::info!(origin = ?origin, "refused a request from a web page");
            return MatrixError::forbidden("Requests from this web origin are not allowed")
                .into_response();
        }
    }
    next.run(request).await
}

/// CORS headers for the allowed origins only.
pub(super) fn cors(policy: Arc<OriginPolicy>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(
            move |origin: &HeaderValue, _: &axum::http::request::Parts| {
                origin.to_str().is_ok_and(|o| policy.allows(o))
            },
        ))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-requested-with"),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> OriginPolicy {
        let mut config = Config::new("unused");
        config.cors_origins = origins.iter().map(|o| o.to_string()).collect();
        OriginPolicy::from_config(&config)
    }

    #[test]
    fn loopback_pages_and_listed_origins_only() {
        let p = policy(&["https://chat.example.org"]);
        for ok in [
            "http://localhost",
            "http://localhost:8080",
            "http://127.0.0.1:3000",
            "http://[::1]:80",
            "https://chat.example.org",
            "HTTPS://Chat.Example.org",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for refused in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "http://localhost:80x",
            "null",
            "file://",
            "https://chat.example.org.evil",
        ] {
            assert!(!p.allows(refused), "{refused}");
        }
        let mut config = Config::new("unused");
        config.cors_allow_loopback = false;
        assert!(!OriginPolicy::from_config(&config).allows("http://localhost:8080"));
    }

    #[test]
    fn hosts_must_be_addresses_or_localhost() {
        let p = policy(&["https://chat.example.org"]);
        for ok in [
            "127.0.0.1:8008",
            "127.0.0.1",
            "[::1]:8008",
            "localhost:8008",
            "10.0.2.2:8008",
            "chat.example.org",
        ] {
            assert!(p.allows_host(ok), "{ok}");
        }
        for refused in [
            "evil.example:8008",
            "rebind.evil.example",
            "localhost.evil:1",
        ] {
            assert!(!p.allows_host(refused), "{refused}");
        }
    }
}
