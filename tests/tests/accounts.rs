//! Accounts: versions, registration, login, logout and capabilities.
//!
//! Ports these Complement client-server scenarios (matrix-org/complement, tests/csapi):
//! - `TestVersionStructure` (apidoc_version_test.go)
//! - `TestRegistration` (apidoc_register_test.go), without the shared-secret admin
//!   registration subtests, which need a Synapse admin API
//! - `TestLogin` (apidoc_login_test.go)
//! - `TestLogout` (apidoc_logout_test.go)
//! - `TestServerCapabilities` (apidoc_server_capabilities_test.go)
//!
//! plus the registration modes of this server: disabled (403 `M_FORBIDDEN`) and token
//! (`m.login.registration_token` UIA stage).

use neurite_core::RegistrationMode;
use neurite_tests::{TestNode, User, assert_error, assert_status, enc};
use reqwest::Method;
use serde_json::{Value, json};

const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";

/// `POST /register` without a token.
async fn register_raw(node: &TestNode, body: Value) -> (reqwest::StatusCode, Value) {
    node.request(Method::POST, REGISTER, None, Some(body)).await
}

/// `POST /login` with a password for `user` (a localpart or a full user id).
async fn login_raw(
    node: &TestNode,
    user: &str,
    password: &str,
    extra: Value,
) -> (reqwest::StatusCode, Value) {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    node.request(Method::POST, LOGIN, None, Some(body)).await
}

/// Whether a spec version string is `r0.X.Y` or `vX.Y` (X >= 1, optional `-suffix`).
fn is_spec_version(v: &str) -> bool {
    fn digits(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }
    if let Some(rest) = v.strip_prefix("r0.") {
        let parts: Vec<&str> = rest.split('.').collect();
        return parts.len() == 2 && parts.iter().all(|p| digits(p));
    }
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let (numbers, suffix) = match rest.split_once('-') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    if suffix.is_some_and(|s| s.is_empty() || s.chars().any(char::is_whitespace)) {
        return false;
    }
    let Some((major, minor)) = numbers.split_once('.') else {
        return false;
    };
    digits(major) && !major.starts_with('0') && digits(minor)
}

async fn whoami(user: &User) -> Value {
    user.get_ok("/account/whoami").await
}

// ---------------------------------------------------------------- TestVersionStructure

#[tokio::test]
async fn versions_responds_with_valid_structure() {
    let node = TestNode::start().await;
    let resp = node
        .request(Method::GET, "/_matrix/client/versions", None, None)
        .await;
    let body = assert_status(&resp, 200);
    let versions = body["versions"].as_array().expect("versions is an array");
    assert!(!versions.is_empty(), "no versions: {body}");
    for v in versions {
        let s = v
            .as_str()
            .unwrap_or_else(|| panic!("version is not a string: {v}"));
        assert!(is_spec_version(s), "not a spec version: {s}");
    }
    if let Some(unstable) = body.get("unstable_features") {
        let map = unstable
            .as_object()
            .expect("unstable_features is an object");
        for (k, v) in map {
            assert!(
                v.is_boolean(),
                "unstable_features.{k} is not a boolean: {v}"
            );
        }
    }
}

#[test]
fn spec_version_matcher_accepts_only_spec_versions() {
    for ok in ["r0.6.1", "r0.0.0", "v1.1", "v1.11", "v12.0", "v1.2-rc1"] {
        assert!(is_spec_version(ok), "{ok}");
    }
    for bad in [
        "r1.0.0", "v0.1", "v01.1", "1.1", "v1", "v1.x", "v1.1-", "r0.6",
    ] {
        assert!(!is_spec_version(bad), "{bad}");
    }
}

// ---------------------------------------------------------------- TestRegistration

#[tokio::test]
async fn registration_without_auth_returns_flows() {
    let node = TestNode::start().await;
    // Checked with a raw client so that the content type can be seen too.
    let resp = reqwest::Client::new()
        .post(format!("{}{REGISTER}", node.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    let body: Value = resp.json().await.expect("json body");
    let flows = body["flows"].as_array().expect("flows is an array");
    assert!(!flows.is_empty(), "no flows: {body}");
    for flow in flows {
        assert!(flow["stages"].is_array(), "flow without stages: {flow}");
    }
    assert!(
        flows
            .iter()
            .any(|f| f["stages"] == json!(["m.login.dummy"])),
        "open registration offers m.login.dummy: {body}"
    );
    assert!(body["session"].is_string(), "no session: {body}");
    assert!(body["params"].is_object(), "no params: {body}");
}

#[tokio::test]
async fn registration_creates_user() {
    let node = TestNode::start().await;
    let resp = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.dummy" },
            "username": "post-can-create-a-user",
            "password": "sUp3rs3kr1t",
        }),
    )
    .await;
    let body = assert_status(&resp, 200);
    assert!(body["access_token"].is_string(), "{body}");
    assert!(body["device_id"].is_string(), "{body}");
    let expected = format!("@post-can-create-a-user:{}", node.server_name());
    assert_eq!(body["user_id"], expected.as_str());
    // The token works straight away.
    let (status, me) = node
        .request(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            body["access_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], expected.as_str());
    assert_eq!(me["device_id"], body["device_id"]);
}

#[tokio::test]
async fn registration_downcases_capitals_in_username() {
    let node = TestNode::start().await;
    let resp = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.dummy" },
            "username": "user-UPPER",
            "password": "sUp3rs3kr1t",
        }),
    )
    .await;
    let body = assert_status(&resp, 200);
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(
        body["user_id"],
        format!("@user-upper:{}", node.server_name()).as_str()
    );
}

#[tokio::test]
async fn registration_returns_requested_device_id() {
    let node = TestNode::start().await;
    let resp = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.dummy" },
            "username": "user-device",
            "password": "sUp3rs3kr1t",
            "device_id": "my_device_id",
        }),
    )
    .await;
    let body = assert_status(&resp, 200);
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(body["device_id"], "my_device_id");
}

#[tokio::test]
async fn registration_rejects_usernames_with_special_characters() {
    let node = TestNode::start().await;
    for ch in [
        "!", "\"", ":", "?", "\\", "@", "[", "]", "{", "|", "}", "£", "é", "\n", "'",
    ] {
        let resp = register_raw(
            &node,
            json!({
                "auth": { "type": "m.login.dummy" },
                "username": format!("user-{ch}-reject-please"),
                "password": "sUp3rs3kr1t",
            }),
        )
        .await;
        assert_error(&resp, 400, "M_INVALID_USERNAME");
    }
}

#[tokio::test]
async fn registration_rejects_taken_username() {
    let node = TestNode::start().await;
    let first = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.dummy" },
            "username": "post-can-create-a-user-once",
            "password": "sUp3rs3kr1t",
        }),
    )
    .await;
    let body = assert_status(&first, 200);
    assert!(body["access_token"].is_string(), "{body}");
    let second = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.dummy" },
            "username": "post-can-create-a-user-once",
            "password": "anotherSuperSecret",
        }),
    )
    .await;
    assert_error(&second, 400, "M_USER_IN_USE");
    // The first password still holds.
    let (status, b) = login_raw(
        &node,
        "post-can-create-a-user-once",
        "sUp3rs3kr1t",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    let (status, b) = login_raw(
        &node,
        "post-can-create-a-user-once",
        "anotherSuperSecret",
        json!({}),
    )
    .await;
    assert_error(&(status, b), 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn registration_allows_username_characters() {
    let node = TestNode::start().await;
    for ch in ['q', '3', '.', '_', '=', '-', '/'] {
        let name = format!("chrtestuser{ch}");
        let user = node.register(&name).await;
        assert_eq!(user.user_id, format!("@{name}:{}", node.server_name()));
        assert_eq!(whoami(&user).await["user_id"], user.user_id.as_str());
    }
}

#[tokio::test]
async fn registration_accepts_non_ascii_password() {
    let node = TestNode::start().await;
    let request = json!({
        "username": "test_user",
        "password": "übers3kr1t",
        "device_id": "xyzzy",
        "initial_device_display_name": "display_name",
    });
    let challenge = assert_status(&register_raw(&node, request.clone()).await, 401);
    let session = challenge["session"].as_str().expect("session").to_owned();
    let mut complete = request;
    complete["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let body = assert_status(&register_raw(&node, complete).await, 200);
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(body["device_id"], "xyzzy");
    // The non-ASCII password logs in.
    let user = node.login("test_user", "übers3kr1t").await;
    let devices = user.get_ok("/devices").await;
    let display_names: Vec<&Value> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| &d["display_name"])
        .collect();
    assert!(display_names.contains(&&json!("display_name")), "{devices}");
}

#[tokio::test]
async fn registration_with_inhibit_login_returns_no_token() {
    let node = TestNode::start().await;
    let resp = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.dummy" },
            "username": "inhibited",
            "password": "sUp3rs3kr1t",
            "inhibit_login": true,
        }),
    )
    .await;
    let body = assert_status(&resp, 200);
    assert_eq!(
        body["user_id"],
        format!("@inhibited:{}", node.server_name()).as_str()
    );
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body.get("device_id").is_none(), "{body}");
    // The account exists: logging in works.
    node.login("inhibited", "sUp3rs3kr1t").await;
}

#[tokio::test]
async fn register_available_reports_free_username() {
    let node = TestNode::start().await;
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v3/register/available?username=username_should_be_available",
            None,
            None,
        )
        .await;
    let body = assert_status(&resp, 200);
    assert_eq!(body["available"], true);
}

#[tokio::test]
async fn register_available_reports_taken_username() {
    let node = TestNode::start().await;
    node.register("username_not_available").await;
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v3/register/available?username=username_not_available",
            None,
            None,
        )
        .await;
    assert_error(&resp, 400, "M_USER_IN_USE");
}

#[tokio::test]
async fn register_available_rejects_invalid_username() {
    let node = TestNode::start().await;
    let path = format!(
        "/_matrix/client/v3/register/available?username={}",
        enc("username,should_not_be_valid")
    );
    let resp = node.request(Method::GET, &path, None, None).await;
    assert_error(&resp, 400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn registration_disabled_is_forbidden() {
    let node = TestNode::start_with(|c| c.registration = RegistrationMode::Disabled).await;
    // Neither a bare request nor a completed dummy stage gets through.
    let bare = register_raw(
        &node,
        json!({ "username": "nobody", "password": "sUp3rs3kr1t" }),
    )
    .await;
    assert_error(&bare, 403, "M_FORBIDDEN");
    let dummy = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.dummy" },
            "username": "nobody",
            "password": "sUp3rs3kr1t",
        }),
    )
    .await;
    assert_error(&dummy, 403, "M_FORBIDDEN");
    let (status, body) = login_raw(&node, "nobody", "sUp3rs3kr1t", json!({})).await;
    assert_error(&(status, body), 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn registration_token_mode_challenges_with_registration_token() {
    let node =
        TestNode::start_with(|c| c.registration = RegistrationMode::Token("s3cret".into())).await;
    let challenge = assert_status(
        &register_raw(
            &node,
            json!({ "username": "tok", "password": "sUp3rs3kr1t" }),
        )
        .await,
        401,
    );
    let flows = challenge["flows"].as_array().expect("flows");
    assert!(
        flows
            .iter()
            .any(|f| f["stages"] == json!(["m.login.registration_token"])),
        "token flow offered: {challenge}"
    );
    assert!(
        !flows.iter().any(|f| f["stages"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("m.login.dummy")))),
        "dummy stage must not be offered in token mode: {challenge}"
    );
    assert!(challenge["session"].is_string(), "{challenge}");
    // The dummy stage alone does not register.
    let dummy = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.dummy" },
            "username": "tok",
            "password": "sUp3rs3kr1t",
        }),
    )
    .await;
    let body = assert_status(&dummy, 401);
    assert!(body.get("access_token").is_none(), "{body}");
}

#[tokio::test]
async fn registration_token_mode_refuses_wrong_token() {
    let node =
        TestNode::start_with(|c| c.registration = RegistrationMode::Token("s3cret".into())).await;
    let challenge = assert_status(
        &register_raw(
            &node,
            json!({ "username": "tok", "password": "sUp3rs3kr1t" }),
        )
        .await,
        401,
    );
    let session = challenge["session"].as_str().expect("session").to_owned();
    let wrong = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.registration_token", "token": "guess", "session": session },
            "username": "tok",
            "password": "sUp3rs3kr1t",
        }),
    )
    .await;
    let body = assert_status(&wrong, 401);
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(
        body["flows"].is_array(),
        "a failed stage repeats the flows: {body}"
    );
    // The validity endpoint agrees.
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=guess",
            None,
            None,
        )
        .await;
    assert_eq!(assert_status(&resp, 200)["valid"], false);
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v3/register/m.login.registration_token/validity?token=guess",
            None,
            None,
        )
        .await;
    assert_eq!(assert_status(&resp, 200)["valid"], false);
    // The name is still free.
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v3/register/available?username=tok",
            None,
            None,
        )
        .await;
    assert_eq!(assert_status(&resp, 200)["available"], true);
}

#[tokio::test]
async fn registration_token_mode_accepts_right_token() {
    let node =
        TestNode::start_with(|c| c.registration = RegistrationMode::Token("s3cret".into())).await;
    let challenge = assert_status(
        &register_raw(
            &node,
            json!({ "username": "tok", "password": "sUp3rs3kr1t" }),
        )
        .await,
        401,
    );
    let session = challenge["session"].as_str().expect("session").to_owned();
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=s3cret",
            None,
            None,
        )
        .await;
    assert_eq!(assert_status(&resp, 200)["valid"], true);
    let right = register_raw(
        &node,
        json!({
            "auth": { "type": "m.login.registration_token", "token": "s3cret", "session": session },
            "username": "tok",
            "password": "sUp3rs3kr1t",
        }),
    )
    .await;
    let body = assert_status(&right, 200);
    assert_eq!(
        body["user_id"],
        format!("@tok:{}", node.server_name()).as_str()
    );
    assert!(body["access_token"].is_string(), "{body}");
    node.login("tok", "sUp3rs3kr1t").await;
}

// ---------------------------------------------------------------- TestLogin

#[tokio::test]
async fn login_flows_are_listed() {
    let node = TestNode::start().await;
    let body = assert_status(&node.request(Method::GET, LOGIN, None, None).await, 200);
    let flows = body["flows"].as_array().expect("flows is an array");
    for flow in flows {
        assert!(
            flow["stages"].is_array() || flow["type"].is_string(),
            "flow without type: {flow}"
        );
    }
    assert!(
        flows.iter().any(|f| f["type"] == "m.login.password"),
        "password login offered: {body}"
    );
}

#[tokio::test]
async fn login_with_full_user_id() {
    let node = TestNode::start().await;
    let user = node.register("login-full").await;
    let body = assert_status(
        &login_raw(&node, &user.user_id, "correct horse", json!({})).await,
        200,
    );
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(body["user_id"], user.user_id.as_str());
    assert_ne!(
        body["access_token"],
        user.token.as_str(),
        "a new login gets a new token"
    );
}

#[tokio::test]
async fn login_returns_requested_device_id() {
    let node = TestNode::start().await;
    let user = node.register("login-device").await;
    let body = assert_status(
        &login_raw(
            &node,
            &user.user_id,
            "correct horse",
            json!({ "device_id": "test_device_id" }),
        )
        .await,
        200,
    );
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(body["device_id"], "test_device_id");
}

#[tokio::test]
async fn login_with_localpart() {
    let node = TestNode::start().await;
    let user = node.register("login-local").await;
    let body = assert_status(
        &login_raw(&node, "login-local", "correct horse", json!({})).await,
        200,
    );
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(body["user_id"], user.user_id.as_str());
}

#[tokio::test]
async fn login_rejects_unknown_user() {
    let node = TestNode::start().await;
    node.register("login-someone").await;
    let resp = login_raw(&node, "i-dont-exist", "correct horse", json!({})).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn login_rejects_wrong_password() {
    let node = TestNode::start().await;
    let user = node.register("login-wrong").await;
    let resp = login_raw(&node, &user.user_id, "wrong_password", json!({})).await;
    assert_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn login_rejects_unknown_login_type() {
    let node = TestNode::start().await;
    let user = node.register("login-type").await;
    let resp = node
        .request(
            Method::POST,
            LOGIN,
            None,
            Some(json!({
                "type": "m.login.magic",
                "identifier": { "type": "m.id.user", "user": user.user_id },
                "password": "correct horse",
            })),
        )
        .await;
    let body = assert_status(&resp, 400);
    assert!(body.get("access_token").is_none(), "{body}");
}

#[tokio::test]
async fn login_with_uppercase_user_id_then_whoami() {
    let node = TestNode::start().await;
    let user = node.register("login-upper").await;
    let shouted = format!("@LOGIN-UPPER:{}", node.server_name());
    let body = assert_status(
        &login_raw(&node, &shouted, "correct horse", json!({})).await,
        200,
    );
    assert_eq!(body["user_id"], user.user_id.as_str());
    let token = body["access_token"].as_str().expect("access_token");
    let resp = node
        .request(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            Some(token),
            None,
        )
        .await;
    assert_eq!(assert_status(&resp, 200)["user_id"], user.user_id.as_str());
    // The localpart alone, in capitals, works too.
    assert_status(
        &login_raw(&node, "LOGIN-UPPER", "correct horse", json!({})).await,
        200,
    );
}

// ---------------------------------------------------------------- TestLogout

fn device_ids(devices: &Value) -> Vec<String> {
    devices["devices"]
        .as_array()
        .expect("devices is an array")
        .iter()
        .map(|d| d["device_id"].as_str().expect("device_id").to_owned())
        .collect()
}

#[tokio::test]
async fn logout_current_device() {
    let node = TestNode::start().await;
    let first = node.register("logout-one").await;
    let second = node.login("logout-one", "correct horse").await;
    assert_ne!(first.device_id, second.device_id);
    assert_eq!(device_ids(&second.get_ok("/devices").await).len(), 2);
    // Like most clients, send no body at all.
    assert_status(&second.call(Method::POST, "/logout", None).await, 200);
    // The logged-out session is gone ...
    assert_error(&second.get("/sync?timeout=0").await, 401, "M_UNKNOWN_TOKEN");
    // ... and so is its device; the other session still works.
    let ids = device_ids(&first.get_ok("/devices").await);
    assert_eq!(ids, vec![first.device_id.clone()]);
}

#[tokio::test]
async fn logout_all_devices() {
    let node = TestNode::start().await;
    let first = node.register("logout-all").await;
    let second = node.login("logout-all", "correct horse").await;
    assert_eq!(device_ids(&second.get_ok("/devices").await).len(), 2);
    second.post_ok("/logout/all", json!({})).await;
    assert_error(&second.get("/sync?timeout=0").await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&first.get("/sync?timeout=0").await, 401, "M_UNKNOWN_TOKEN");
    // A fresh login is still possible and sees only itself.
    let third = node.login("logout-all", "correct horse").await;
    assert_eq!(
        device_ids(&third.get_ok("/devices").await),
        vec![third.device_id.clone()]
    );
}

#[tokio::test]
async fn logout_with_invalid_token_is_rejected() {
    let node = TestNode::start().await;
    let user = node.register("logout-invalid").await;
    let resp = node
        .request(
            Method::POST,
            "/_matrix/client/v3/logout",
            Some("invalidAccessToken"),
            Some(json!({})),
        )
        .await;
    assert_error(&resp, 401, "M_UNKNOWN_TOKEN");
    // The real session is untouched.
    whoami(&user).await;
}

#[tokio::test]
async fn logout_without_token_is_rejected() {
    let node = TestNode::start().await;
    let user = node.register("logout-missing").await;
    let resp = node
        .request(
            Method::POST,
            "/_matrix/client/v3/logout",
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
    whoami(&user).await;
}

// ---------------------------------------------------------------- TestServerCapabilities

#[tokio::test]
async fn capabilities_are_well_formed_for_user() {
    let node = TestNode::start().await;
    let user = node.register("caps").await;
    let body = user.get_ok("/capabilities").await;
    let caps = &body["capabilities"];
    assert!(caps["m.change_password"]["enabled"].is_boolean(), "{body}");
    let versions = &caps["m.room_versions"];
    let default = versions["default"].as_str().expect("default room version");
    let available = versions["available"]
        .as_object()
        .expect("available room versions");
    assert!(
        available.contains_key(default),
        "default version is available: {body}"
    );
    for (v, stability) in available {
        assert!(
            stability == "stable" || stability == "unstable",
            "room version {v} has stability {stability}"
        );
    }
}

#[tokio::test]
async fn capabilities_require_authentication() {
    let node = TestNode::start().await;
    let resp = node
        .request(Method::GET, "/_matrix/client/v3/capabilities", None, None)
        .await;
    assert_error(&resp, 401, "M_MISSING_TOKEN");
}
