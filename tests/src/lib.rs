//! Test harness: real nodes on ephemeral loopback ports, spoken to over real HTTP.
//!
//! Every wait is bounded: a test that would hang fails within [`WAIT`] instead.

use std::time::Duration;

use neurite_core::{Config, Node, PasswordCost, RateLimits, RegistrationMode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub use serde_json;

pub mod churn;
pub mod evil;
pub mod png;
pub mod process;

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A node running in this process on `127.0.0.1:0` with its own temporary data directory.
pub struct TestNode {
    node: Option<Node>,
    /// Keeps the data directory alive.
    pub dir: tempfile::TempDir,
    /// Base URL of the client API.
    pub url: String,
    http: reqwest::Client,
}

impl TestNode {
    /// Starts a node with open registration and cheap password hashing.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after letting the test adjust its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, adjust).await
    }

    /// Starts a node in an existing data directory (to test restarts).
    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(dir.path());
        config.registration = RegistrationMode::Open;
        config.password_cost = PasswordCost::TESTING;
        // The suite makes many accounts and logins; `hostile_local` sets real limits back.
        config.rate_limits = RateLimits::UNLIMITED;
        // Peer-to-peer on loopback only; tests never use mDNS.
        config.p2p_listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
        config.mdns_enabled = false;
        adjust(&mut config);
        let node = tokio::time::timeout(WAIT, Node::start(config))
            .await
            .expect("node start timed out")
            .expect("node failed to start");
        let url = node.client_url();
        Self {
            node: Some(node),
            dir,
            url,
            http: http_client(),
        }
    }

    /// The node's server name.
    pub fn server_name(&self) -> String {
        self.node
            .as_ref()
            .expect("running")
            .server_name()
            .to_owned()
    }

    /// The running node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("running")
    }

    /// Stops the node and hands back its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
        self.dir
    }

    /// Registers a user through the API (`m.login.dummy`), returning a logged-in client.
    pub async fn register(&self, name: &str) -> User {
        let (status, body) = self
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(json!({ "username": name, "password": "correct horse", "auth": { "type": "m.login.dummy" } })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {name}: {body}");
        User::from_login(self, &body)
    }

    /// Logs in with a password.
    pub async fn login(&self, name: &str, password: &str) -> User {
        let (status, body) = self
            .request(
                Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": name },
                    "password": password,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {name}: {body}");
        User::from_login(self, &body)
    }

    /// A raw request: path from the server root, optional token and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        send(
            &self.http,
            &self.url,
            method,
            path,
            token,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }

    /// A raw request with a body of arbitrary bytes.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        send(&self.http, &self.url, method, path, token, Some(body)).await
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = tokio::time::timeout(WAIT * 4, req.send())
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("response body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("response is not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, value)
}

/// A logged-in user of a [`TestNode`].
#[derive(Clone)]
pub struct User {
    /// Full user id.
    pub user_id: String,
    /// Device id.
    pub device_id: String,
    /// Access token.
    pub token: String,
    base: String,
    http: reqwest::Client,
}

impl User {
    fn from_login(node: &TestNode, body: &Value) -> Self {
        Self {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            base: node.url.clone(),
            http: node.http.clone(),
        }
    }

    /// An authenticated request; `path` is relative to `/_matrix/client/v3` unless it starts
    /// with `/_matrix`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let path = if path.starts_with("/_matrix") {
            path.to_owned()
        } else {
            format!("/_matrix/client/v3{path}")
        };
        send(
            &self.http,
            &self.base,
            method,
            &path,
            Some(&self.token),
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// POST.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// PUT.
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// GET that must succeed.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (s, b) = self.get(path).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {b}");
        b
    }

    /// POST that must succeed.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (s, b) = self.post(path, body).await;
        assert_eq!(s, StatusCode::OK, "POST {path}: {b}");
        b
    }

    /// PUT that must succeed.
    pub async fn put_ok(&self, path: &str, body: Value) -> Value {
        let (s, b) = self.put(path, body).await;
        assert_eq!(s, StatusCode::OK, "PUT {path}: {b}");
        b
    }

    /// Creates a room and returns its id.
    pub async fn create_room(&self, body: Value) -> String {
        let b = self.post_ok("/createRoom", body).await;
        b["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Joins a room (by id or alias) and returns the room id.
    pub async fn join(&self, room: &str) -> String {
        let b = self
            .post_ok(&format!("/join/{}", enc(room)), json!({}))
            .await;
        b["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Invites a user.
    pub async fn invite(&self, room: &str, user: &str) {
        self.post_ok(
            &format!("/rooms/{}/invite", enc(room)),
            json!({ "user_id": user }),
        )
        .await;
    }

    /// Redacts an event (no reason), which must succeed.
    pub async fn redact(&self, room: &str, event: &str) {
        self.put_ok(
            &format!("/rooms/{}/redact/{}/{}", enc(room), enc(event), fresh_txn()),
            json!({}),
        )
        .await;
    }

    /// Sends an `m.room.message` text and returns the event id.
    pub async fn send_text(&self, room: &str, body: &str) -> String {
        let txn = format!("t{}", next_txn());
        let b = self
            .put_ok(
                &format!("/rooms/{}/send/m.room.message/{txn}", enc(room)),
                json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        b["event_id"].as_str().expect("event_id").to_owned()
    }

    /// One `/sync` call.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Value {
        let mut path = format!("/sync?timeout={timeout_ms}");
        if let Some(s) = since {
            path.push_str(&format!("&since={}", enc(s)));
        }
        self.get_ok(&path).await
    }

    /// Syncs (long-polling) until `pred` holds for a response; returns that response.
    /// Panics after [`WAIT`].
    pub async fn sync_until(
        &self,
        since: Option<&str>,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut since = since.map(str::to_owned);
        loop {
            let resp = self.sync(since.as_deref(), 1000).await;
            if pred(&resp) {
                return resp;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sync condition not met within {WAIT:?}"
            );
            since = resp["next_batch"].as_str().map(str::to_owned);
        }
    }
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    neurite_core::http::percent_encode(s)
}

fn next_txn() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The timeline events of a room in a sync response.
pub fn timeline<'a>(sync: &'a Value, room: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Whether a sync response's timeline for `room` holds an event with this id.
pub fn has_event(sync: &Value, room: &str, event_id: &str) -> bool {
    timeline(sync, room)
        .iter()
        .any(|e| e["event_id"] == event_id)
}

/// Asserts that a response is the Matrix error `errcode` with HTTP status `status`, and
/// that its body carries both `errcode` and a string `error`. Returns the body.
#[track_caller]
pub fn assert_error(resp: &(StatusCode, Value), status: u16, errcode: &str) -> Value {
    let (s, body) = resp;
    assert_ne!(s.as_u16(), 500, "server error: {body}");
    assert_eq!(
        s.as_u16(),
        status,
        "expected {status} {errcode}, got {s}: {body}"
    );
    assert_eq!(body["errcode"], errcode, "wrong errcode: {body}");
    assert!(
        body["error"].is_string(),
        "error body without an \"error\" string: {body}"
    );
    body.clone()
}

/// Asserts that a response has HTTP status `status` (and is not a server error). Returns
/// the body.
#[track_caller]
pub fn assert_status(resp: &(StatusCode, Value), status: u16) -> Value {
    let (s, body) = resp;
    assert_ne!(s.as_u16(), 500, "server error: {body}");
    assert_eq!(s.as_u16(), status, "expected {status}, got {s}: {body}");
    if !s.is_success() {
        assert!(
            body["errcode"].is_string(),
            "error body without \"errcode\": {body}"
        );
        assert!(
            body["error"].is_string(),
            "error body without \"error\": {body}"
        );
    }
    body.clone()
}

// ---- Helpers for the room and message tests (tests/tests/rooms.rs, tests/tests/messages.rs). ----

/// A fresh transaction id, unique within this test process.
pub fn fresh_txn() -> String {
    format!("h{}", next_txn())
}

/// The `next_batch` token of a sync response.
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// The ids of the events in a list of client events (a `chunk`, a timeline).
pub fn event_ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds a query string (with its `?`, empty for no pairs) from pairs, each encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        String::new()
    } else {
        format!(
            "?{}",
            neurite_core::http::query_string(pairs.iter().copied())
        )
    }
}

impl User {
    /// Sends a message-like event with a fresh transaction id; returns the event id.
    pub async fn send_event(&self, room: &str, ty: &str, content: Value) -> String {
        self.send_event_with_txn(room, ty, &fresh_txn(), content)
            .await
    }

    /// Sends a message-like event with the given transaction id; returns the event id.
    pub async fn send_event_with_txn(
        &self,
        room: &str,
        ty: &str,
        txn: &str,
        content: Value,
    ) -> String {
        let b = self
            .put_ok(
                &format!("/rooms/{}/send/{}/{}", enc(room), enc(ty), enc(txn)),
                content,
            )
            .await;
        b["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Sets a state event; returns the event id.
    pub async fn send_state(&self, room: &str, ty: &str, key: &str, content: Value) -> String {
        let b = self
            .put_ok(
                &format!("/rooms/{}/state/{}/{}", enc(room), enc(ty), enc(key)),
                content,
            )
            .await;
        b["event_id"].as_str().expect("event_id").to_owned()
    }

    /// The content of a current state event (must exist).
    pub async fn state_content(&self, room: &str, ty: &str, key: &str) -> Value {
        self.get_ok(&format!(
            "/rooms/{}/state/{}/{}",
            enc(room),
            enc(ty),
            enc(key)
        ))
        .await
    }

    /// Leaves a room.
    pub async fn leave(&self, room: &str) {
        self.post_ok(&format!("/rooms/{}/leave", enc(room)), json!({}))
            .await;
    }

    /// `GET /rooms/{room}/messages` with the given query pairs; must succeed.
    pub async fn messages(&self, room: &str, pairs: &[(&str, &str)]) -> Value {
        self.get_ok(&format!("/rooms/{}/messages{}", enc(room), query(pairs)))
            .await
    }

    /// One `/sync` call with an inline JSON filter.
    pub async fn sync_filtered(
        &self,
        filter: &Value,
        since: Option<&str>,
        timeout_ms: u64,
    ) -> Value {
        let filter = filter.to_string();
        let mut pairs = vec![("filter", filter.as_str())];
        let timeout = timeout_ms.to_string();
        pairs.push(("timeout", timeout.as_str()));
        if let Some(s) = since {
            pairs.push(("since", s));
        }
        self.get_ok(&format!("/sync{}", query(&pairs))).await
    }

    /// Like [`User::sync_until`], with an inline JSON filter. Panics after [`WAIT`].
    pub async fn sync_filtered_until(
        &self,
        filter: &Value,
        since: Option<&str>,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut since = since.map(str::to_owned);
        loop {
            let resp = self.sync_filtered(filter, since.as_deref(), 1000).await;
            if pred(&resp) {
                return resp;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sync condition not met within {WAIT:?}"
            );
            since = resp["next_batch"].as_str().map(str::to_owned);
        }
    }
}

/// Logs in as an existing user on a chosen device id.
pub async fn login_on_device(node: &TestNode, name: &str, password: &str, device_id: &str) -> User {
    let (status, body) = node
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": name },
                "password": password,
                "device_id": device_id,
            })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "login {name} on {device_id}: {body}"
    );
    User::from_login(node, &body)
}

// ---- Helpers for the end-to-end encryption and device tests (tests/tests/e2ee.rs, devices.rs). ----

/// An ed25519 key that signs key objects the way Matrix clients do: over the canonical JSON
/// of the object without `signatures` and `unsigned`, unpadded base64.
pub struct TestSigningKey {
    key: ed25519_dalek::SigningKey,
}

impl TestSigningKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random seed");
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The public key, unpadded base64.
    pub fn public(&self) -> String {
        data_encoding::BASE64_NOPAD.encode(self.key.verifying_key().as_bytes())
    }

    /// The signature of `object`, unpadded base64.
    pub fn sign_json(&self, object: &Value) -> String {
        use ed25519_dalek::Signer;
        let mut object = object.clone();
        if let Some(map) = object.as_object_mut() {
            map.remove("signatures");
            map.remove("unsigned");
        }
        let canonical = ruma::CanonicalJsonValue::try_from(object)
            .expect("canonical JSON")
            .to_string();
        data_encoding::BASE64_NOPAD.encode(&self.key.sign(canonical.as_bytes()).to_bytes())
    }

    /// Signs `object` and adds the signature as `signatures[user][key_id]`.
    pub fn add_signature(&self, object: &mut Value, user: &str, key_id: &str) {
        let sig = self.sign_json(object);
        if !object["signatures"].is_object() {
            object["signatures"] = json!({});
        }
        if !object["signatures"][user].is_object() {
            object["signatures"][user] = json!({});
        }
        object["signatures"][user][key_id] = json!(sig);
    }
}

/// Device keys for `user`'s device with `key` as its ed25519 identity key, self-signed.
pub fn signed_device_keys(user: &User, key: &TestSigningKey) -> Value {
    let mut curve = [0u8; 32];
    getrandom::fill(&mut curve).expect("random key");
    let mut keys = json!({
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("ed25519:{}", user.device_id): key.public(),
            format!("curve25519:{}", user.device_id): data_encoding::BASE64_NOPAD.encode(&curve),
        },
    });
    key.add_signature(
        &mut keys,
        &user.user_id,
        &format!("ed25519:{}", user.device_id),
    );
    keys
}

/// `count` signed `signed_curve25519` one-time keys named `signed_curve25519:{prefix}{i}`.
pub fn signed_one_time_keys(
    user: &User,
    key: &TestSigningKey,
    prefix: &str,
    count: usize,
) -> Value {
    let mut out = serde_json::Map::new();
    for i in 0..count {
        let mut public = [0u8; 32];
        getrandom::fill(&mut public).expect("random key");
        let mut otk = json!({ "key": data_encoding::BASE64_NOPAD.encode(&public) });
        key.add_signature(
            &mut otk,
            &user.user_id,
            &format!("ed25519:{}", user.device_id),
        );
        out.insert(format!("signed_curve25519:{prefix}{i}"), otk);
    }
    Value::Object(out)
}

/// The to-device events of a sync response.
pub fn to_device_events(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether a sync response lists `user` in `device_lists.<field>` (`changed` or `left`).
pub fn device_list_has(sync: &Value, field: &str, user: &str) -> bool {
    sync["device_lists"][field]
        .as_array()
        .is_some_and(|a| a.iter().any(|u| u == user))
}

impl User {
    /// `POST /keys/upload` that must succeed; returns `one_time_key_counts`.
    pub async fn upload_keys(&self, body: Value) -> Value {
        self.post_ok("/keys/upload", body).await["one_time_key_counts"].clone()
    }

    /// `PUT /sendToDevice/{type}/{txn}` with a fresh transaction id; must succeed.
    pub async fn send_to_device(&self, ty: &str, messages: Value) {
        self.put_ok(
            &format!("/sendToDevice/{}/{}", enc(ty), fresh_txn()),
            json!({ "messages": messages }),
        )
        .await;
    }
}

// ---- Helpers for the media tests (tests/tests/media.rs). ----

/// A response read as raw bytes, with its headers (media is not JSON).
pub struct RawResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A response header as a string (empty if absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The body as JSON (for error responses).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "response is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Status and JSON body, in the shape [`assert_error`] takes.
    pub fn as_error(&self) -> (StatusCode, Value) {
        (self.status, self.json())
    }
}

async fn send_raw(
    http: &reqwest::Client,
    url: String,
    method: Method,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> RawResponse {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = tokio::time::timeout(WAIT * 4, req.send())
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("response body").to_vec();
    RawResponse {
        status,
        headers,
        body,
    }
}

impl TestNode {
    /// How many long-polls (and other listeners) wait on the node's change notifier.
    pub fn listeners(&self) -> usize {
        self.node().services().notifier.listeners()
    }

    /// Waits (bounded by [`WAIT`]) until more than `before` listeners wait on the node's
    /// changes: a long-poll started after reading `before` is then sure to see a change made
    /// from now on.
    pub async fn until_listening(&self, before: usize) {
        tokio::time::timeout(WAIT, async {
            while self.listeners() <= before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the long-poll never started waiting");
    }

    /// A raw request with extra headers, answered as raw bytes. `path` is from the server root.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> RawResponse {
        send_raw(
            &self.http,
            format!("{}{path}", self.url),
            method,
            token,
            headers,
            body,
        )
        .await
    }
}

impl User {
    /// `POST /_matrix/media/v3/upload` with an optional file name and content type.
    pub async fn upload(
        &self,
        bytes: &[u8],
        filename: Option<&str>,
        content_type: Option<&str>,
    ) -> (StatusCode, Value) {
        let path = match filename {
            Some(f) => format!("/_matrix/media/v3/upload{}", query(&[("filename", f)])),
            None => "/_matrix/media/v3/upload".to_owned(),
        };
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| vec![("content-type", ct)])
            .unwrap_or_default();
        let resp = self
            .raw(Method::POST, &path, &headers, Some(bytes.to_vec()))
            .await;
        let body = if resp.body.is_empty() {
            Value::Null
        } else {
            resp.json()
        };
        (resp.status, body)
    }

    /// Uploads and returns the `mxc://` URI; the upload must succeed.
    pub async fn upload_ok(
        &self,
        bytes: &[u8],
        filename: Option<&str>,
        content_type: Option<&str>,
    ) -> String {
        let (status, body) = self.upload(bytes, filename, content_type).await;
        assert_eq!(status, StatusCode::OK, "upload: {body}");
        let uri = body["content_uri"]
            .as_str()
            .expect("content_uri")
            .to_owned();
        assert!(uri.starts_with("mxc://"), "not an mxc URI: {uri}");
        uri
    }

    /// An authenticated raw request (path from the server root), answered as raw bytes.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> RawResponse {
        send_raw(
            &self.http,
            format!("{}{path}", self.base),
            method,
            Some(&self.token),
            headers,
            body,
        )
        .await
    }

    /// An authenticated GET answered as raw bytes.
    pub async fn get_raw(&self, path: &str) -> RawResponse {
        self.raw(Method::GET, path, &[], None).await
    }
}

/// Splits `mxc://server/media` into `(server, media)`.
pub fn split_mxc(uri: &str) -> (String, String) {
    let rest = uri.strip_prefix("mxc://").expect("mxc:// URI");
    let (server, media) = rest.split_once('/').expect("mxc://server/media");
    (server.to_owned(), media.to_owned())
}

/// Two nodes on loopback; the first dials the second as a static peer. Returns `(a, b)`.
pub async fn node_pair() -> (TestNode, TestNode) {
    let b = TestNode::start().await;
    let b_addr = b.node().p2p_addrs()[0].parse().expect("b's address");
    let a = TestNode::start_with(|c| c.static_peers = vec![b_addr]).await;
    (a, b)
}
