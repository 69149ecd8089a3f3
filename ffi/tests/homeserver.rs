//! The library API as an app sees it: real data directories, real ports, real HTTP.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use neurite_ffi::{
    Discovery, Homeserver, HomeserverConfig, HomeserverListener, HomeserverState, ListenerHandle,
    NeuriteError, PeerInfo, PeerPath, RegistrationMode,
};

fn config(dir: &tempfile::TempDir) -> HomeserverConfig {
    HomeserverConfig {
        data_dir: dir.path().to_string_lossy().into_owned(),
        client_port: 0,
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        static_peers: vec![],
        mdns_enabled: false,
        relays: vec![],
        serve_relay: false,
        registration: RegistrationMode::Disabled,
        log_filter: None,
        federation_limits: None,
    }
}

async fn versions(base: &str) -> serde_json::Value {
    let resp = reqwest::get(format!("{base}/_matrix/client/versions"))
        .await
        .expect("GET /versions");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("versions JSON")
}

#[tokio::test]
async fn start_stop_and_start_again_on_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let hs = Homeserver::new(config(&dir)).unwrap();
    let name = hs.server_name();
    assert_eq!(name.len(), 52);
    assert!(hs.client_base_url().is_none());

    hs.clone().start().await.unwrap();
    let url = hs.client_base_url().expect("url while running");
    assert!(url.starts_with("http://127.0.0.1:"));
    let body = versions(&url).await;
    assert!(body["versions"].as_array().is_some_and(|v| !v.is_empty()));
    let addrs = hs.listen_addrs();
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.ends_with(&format!("/p2p/{}", hs.peer_id())))
    );
    let alice = hs
        .clone()
        .register_user("alice".into(), "secret pass".into())
        .await
        .unwrap();
    hs.clone().stop().await.unwrap();
    assert!(hs.client_base_url().is_none());
    assert!(hs.listen_addrs().is_empty());
    assert!(
        reqwest::get(format!("{url}/_matrix/client/versions"))
            .await
            .is_err(),
        "the port is closed after stop"
    );

    hs.clone().start().await.unwrap();
    let url2 = hs.client_base_url().unwrap();
    versions(&url2).await;
    let again = hs
        .clone()
        .login("alice".into(), "secret pass".into())
        .await
        .unwrap();
    assert_eq!(again.user_id, alice.user_id);
    assert_ne!(again.device_id, alice.device_id);
    hs.clone().stop().await.unwrap();

    // A new object on the same directory is the same server.
    let reopened = Homeserver::new(config(&dir)).unwrap();
    assert_eq!(reopened.server_name(), name);
}

#[tokio::test]
async fn register_and_login_give_working_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let hs = Homeserver::new(config(&dir)).unwrap();
    assert!(matches!(
        hs.clone().register_user("bob".into(), "pw".into()).await,
        Err(NeuriteError::NotRunning)
    ));
    hs.clone().start().await.unwrap();
    let bob = hs
        .clone()
        .register_user("Bob".into(), "hunter22".into())
        .await
        .unwrap();
    assert_eq!(bob.user_id, format!("@bob:{}", hs.server_name()));
    assert_eq!(Some(bob.homeserver_url.clone()), hs.client_base_url());

    let whoami: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/account/whoami",
            bob.homeserver_url
        ))
        .bearer_auth(&bob.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["user_id"], bob.user_id.as_str());
    assert_eq!(whoami["device_id"], bob.device_id.as_str());

    assert!(matches!(
        hs.clone().register_user("bob".into(), "other".into()).await,
        Err(NeuriteError::UserExists { .. })
    ));
    assert!(matches!(
        hs.clone()
            .register_user("bad name!".into(), "pw".into())
            .await,
        Err(NeuriteError::InvalidUsername { .. })
    ));
    assert!(matches!(
        hs.clone().login("bob".into(), "wrong".into()).await,
        Err(NeuriteError::InvalidCredentials)
    ));
    assert!(matches!(
        hs.clone().login("nobody".into(), "wrong".into()).await,
        Err(NeuriteError::InvalidCredentials)
    ));
    assert!(matches!(
        hs.clone()
            .login("@bob:elsewhere.example".into(), "hunter22".into())
            .await,
        Err(NeuriteError::InvalidCredentials)
    ));
    let full_id = hs
        .clone()
        .login(bob.user_id.clone(), "hunter22".into())
        .await
        .unwrap();
    assert_eq!(full_id.user_id, bob.user_id);
    hs.clone().stop().await.unwrap();
}

#[tokio::test]
async fn bad_config_is_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [fn(&mut HomeserverConfig); 7] = [
        |c| c.data_dir = " ".into(),
        |c| c.p2p_listen = vec!["not a multiaddr".into()],
        |c| c.static_peers = vec!["/ip4/127.0.0.1/tcp/4001".into()],
        |c| {
            c.registration = RegistrationMode::Token {
                token: String::new(),
            }
        },
        // A token any app could guess: one character, or one short of the minimum.
        |c| c.registration = RegistrationMode::Token { token: "x".into() },
        |c| {
            c.registration = RegistrationMode::Token {
                token: "0123456789abcde".into(),
            }
        },
        |c| c.log_filter = Some("neurite_core=[".into()),
    ];
    for (i, adjust) in cases.iter().enumerate() {
        let mut c = config(&dir);
        adjust(&mut c);
        match Homeserver::new(c) {
            Err(NeuriteError::InvalidConfig { message }) => assert!(!message.is_empty()),
            Err(other) => panic!("case {i}: expected InvalidConfig, got {other:?}"),
            Ok(_) => panic!("case {i}: expected InvalidConfig, got a homeserver"),
        }
    }
    // Sixteen characters are enough.
    let mut c = config(&dir);
    c.registration = RegistrationMode::Token {
        token: "0123456789abcdef".into(),
    };
    assert!(Homeserver::new(c).is_ok());
}

#[tokio::test]
async fn start_twice_is_already_running_and_stop_twice_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let hs = Homeserver::new(config(&dir)).unwrap();
    assert!(matches!(
        hs.clone().stop().await,
        Err(NeuriteError::NotRunning)
    ));
    hs.clone().start().await.unwrap();
    assert!(matches!(
        hs.clone().start().await,
        Err(NeuriteError::AlreadyRunning)
    ));
    hs.clone().stop().await.unwrap();
    assert!(matches!(
        hs.clone().stop().await,
        Err(NeuriteError::NotRunning)
    ));
}

#[tokio::test]
async fn a_taken_client_port_is_a_network_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.client_port = taken.local_addr().unwrap().port();
    let hs = Homeserver::new(c).unwrap();
    let (states, _handle) = Recorder::install(&hs);
    assert!(matches!(
        hs.clone().start().await,
        Err(NeuriteError::Network { .. })
    ));
    assert!(hs.client_base_url().is_none());
    let seen = states.states();
    assert!(matches!(seen.last(), Some(HomeserverState::Failed { .. })));
}

/// Records what a homeserver reports to its listener.
#[derive(Default)]
struct Recorder {
    states: Mutex<Vec<HomeserverState>>,
    connected: Mutex<Vec<PeerInfo>>,
    disconnected: Mutex<Vec<String>>,
    addresses: Mutex<Vec<Vec<String>>>,
    /// Woken at every callback.
    changed: tokio::sync::Notify,
}

impl Recorder {
    /// A new recorder registered with `hs`, and the handle that keeps it registered.
    fn install(hs: &Homeserver) -> (Arc<Self>, Arc<ListenerHandle>) {
        let r = Arc::new(Self::default());
        let handle = hs.add_listener(r.clone());
        (r, handle)
    }

    /// Whether a connection to `peer_id` was reported.
    fn has_connected(&self, peer_id: &str) -> bool {
        self.connected
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.peer_id == peer_id)
    }

    fn states(&self) -> Vec<HomeserverState> {
        self.states.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Self) -> bool) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if check(self) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

impl HomeserverListener for Recorder {
    fn on_state_changed(&self, state: HomeserverState) {
        self.states.lock().unwrap().push(state);
        self.changed.notify_waiters();
    }
    fn on_peer_connected(&self, peer: PeerInfo) {
        self.connected.lock().unwrap().push(peer);
        self.changed.notify_waiters();
    }
    fn on_peer_disconnected(&self, peer_id: String) {
        self.disconnected.lock().unwrap().push(peer_id);
        self.changed.notify_waiters();
    }
    fn on_addresses_changed(&self, addrs: Vec<String>) {
        self.addresses.lock().unwrap().push(addrs);
        self.changed.notify_waiters();
    }
}

/// A relay-only node on loopback, with its tasks (stopped when dropped by the test's end).
async fn loopback_relay() -> (neurite_core::tasks::Tasks, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let identity = neurite_core::identity::Identity::load_or_create(dir.path()).unwrap();
    let tasks = neurite_core::tasks::Tasks::default();
    let relay = neurite_core::p2p::relay::RelayNode::start(
        &identity,
        &["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        &[],
        &neurite_core::p2p::RelayLimits::default(),
        &tasks,
    )
    .await
    .unwrap();
    (tasks, relay.addrs()[0].to_string(), dir)
}

#[tokio::test]
async fn a_relay_reservation_shows_in_the_addresses_and_a_peer_reaches_the_homeserver_through_it() {
    let (relay_tasks, relay_addr, _relay_dir) = loopback_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config_a = config(&dir_a);
    config_a.relays = vec![relay_addr.clone()];
    let a = Homeserver::new(config_a).unwrap();
    let (seen_a, _handle_a) = Recorder::install(&a);
    a.clone().start().await.unwrap();
    // The reservation's address is one of A's addresses, and the listener heard about it.
    let circuit = |addrs: &[String]| addrs.iter().find(|a| a.contains("/p2p-circuit/")).cloned();
    seen_a
        .wait_for("a circuit address", |r| {
            circuit(&a.listen_addrs()).is_some()
                && r.addresses
                    .lock()
                    .unwrap()
                    .iter()
                    .chain(std::iter::once(&a.listen_addrs()))
                    .any(|addrs| circuit(addrs).is_some())
        })
        .await;
    let a_circuit = circuit(&a.listen_addrs()).unwrap();
    assert!(a_circuit.starts_with(&relay_addr), "{a_circuit}");
    assert!(a_circuit.ends_with(&format!("/p2p/{}", a.peer_id())));
    // The relay is listed as such, without a server name.
    let relay_id = relay_addr.rsplit('/').next().unwrap().to_owned();
    let peers = a.clone().peers().await.unwrap();
    let relay = peers.iter().find(|p| p.peer_id == relay_id).expect("relay");
    assert_eq!(relay.discovered, Discovery::Relay);
    assert_eq!(relay.server_name, None);
    assert_eq!(relay.path, Some(PeerPath::Direct));

    // B is given only A's circuit address: it reaches A through the relay (and, both being on
    // loopback, may then upgrade to a direct connection).
    let mut config_b = config(&dir_b);
    config_b.static_peers = vec![a_circuit];
    let b = Homeserver::new(config_b).unwrap();
    let (seen_b, _handle_b) = Recorder::install(&b);
    b.clone().start().await.unwrap();
    let a_id = a.peer_id();
    seen_b
        .wait_for("B to reach A", |r| r.has_connected(&a_id))
        .await;
    let first = seen_b
        .connected
        .lock()
        .unwrap()
        .iter()
        .find(|p| p.peer_id == a_id)
        .cloned()
        .unwrap();
    assert!(first.path.is_some(), "{first:?}");
    // Whatever the path is now, peers() agrees with the last report.
    let last = seen_b
        .connected
        .lock()
        .unwrap()
        .iter()
        .rfind(|p| p.peer_id == a_id)
        .cloned()
        .unwrap();
    let listed = b.clone().peers().await.unwrap();
    let listed = listed
        .iter()
        .find(|p| p.peer_id == a_id)
        .expect("A in B's peers");
    assert!(listed.connected);
    assert!(listed.path.is_some());
    eprintln!("B reached A over {:?}, now {:?}", first.path, last.path);
    b.clone().stop().await.unwrap();
    a.clone().stop().await.unwrap();
    relay_tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn two_homeservers_in_one_process_pair_and_go_offline_and_back() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Homeserver::new(config(&dir_a)).unwrap();
    let b = Homeserver::new(config(&dir_b)).unwrap();
    assert_ne!(a.server_name(), b.server_name());
    let (seen_a, _handle_a) = Recorder::install(&a);
    let (seen_b, _handle_b) = Recorder::install(&b);
    a.clone().start().await.unwrap();
    b.clone().start().await.unwrap();
    assert_eq!(
        seen_a.states(),
        vec![HomeserverState::Starting, HomeserverState::Running]
    );
    let (url_a, url_b) = (a.client_base_url().unwrap(), b.client_base_url().unwrap());
    assert_ne!(url_a, url_b);
    versions(&url_a).await;
    versions(&url_b).await;

    assert!(matches!(
        a.clone().add_peer("/ip4/127.0.0.1/tcp/1".into()).await,
        Err(NeuriteError::InvalidConfig { .. })
    ));
    // Pair A with B the way a QR code would: B's full listen address.
    let b_addr = b.listen_addrs().into_iter().next().unwrap();
    a.clone().add_peer(b_addr).await.unwrap();
    let b_id = b.peer_id();
    seen_a
        .wait_for("A to connect to B", |r| r.has_connected(&b_id))
        .await;
    let a_id = a.peer_id();
    seen_b
        .wait_for("B to see A", |r| r.has_connected(&a_id))
        .await;
    let peer = a
        .clone()
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer_id == b.peer_id())
        .expect("B in A's peers");
    assert!(peer.connected);
    assert_eq!(peer.discovered, Discovery::Static);
    assert_eq!(peer.server_name.as_deref(), Some(b.server_name().as_str()));
    assert!(!peer.addresses.is_empty());

    // A goes to the background: listeners and connections close, the client API stays.
    a.clone().set_network_enabled(false).await.unwrap();
    assert!(a.listen_addrs().is_empty());
    seen_a
        .wait_for("A to drop B", |r| {
            r.disconnected.lock().unwrap().contains(&b_id)
        })
        .await;
    versions(&url_a).await;
    assert!(matches!(
        a.clone().add_peer(b.listen_addrs()[0].clone()).await,
        Err(NeuriteError::Network { .. })
    ));

    // Back in the foreground: A listens again and redials B.
    let before = seen_a.connected.lock().unwrap().len();
    a.clone().set_network_enabled(true).await.unwrap();
    seen_a
        .wait_for("A to reconnect to B", |r| {
            r.connected.lock().unwrap()[before..]
                .iter()
                .any(|p| p.peer_id == b_id)
        })
        .await;
    assert!(!a.listen_addrs().is_empty());

    a.clone().stop().await.unwrap();
    b.clone().stop().await.unwrap();
    assert_eq!(
        seen_a.states()[2..],
        [HomeserverState::Stopping, HomeserverState::Stopped]
    );
}

#[tokio::test]
async fn dropping_a_running_homeserver_releases_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let hs = Homeserver::new(config(&dir)).unwrap();
    hs.clone().start().await.unwrap();
    let url = hs.client_base_url().unwrap();
    drop(hs);
    let again = Homeserver::new(config(&dir)).unwrap();
    again.clone().start().await.unwrap();
    versions(&again.client_base_url().unwrap()).await;
    again.clone().stop().await.unwrap();
    let _ = url;
}

#[tokio::test]
async fn a_static_peer_dialled_during_start_is_reported_once() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Homeserver::new(config(&dir_b)).unwrap();
    b.clone().start().await.unwrap();
    let mut config_a = config(&dir_a);
    config_a.static_peers = b.listen_addrs();
    let a = Homeserver::new(config_a).unwrap();
    let (seen_a, _handle) = Recorder::install(&a);
    // The connection may open before start() returns: it is still reported, once.
    a.clone().start().await.unwrap();
    let b_id = b.peer_id();
    seen_a
        .wait_for("A to report its static peer B", |r| r.has_connected(&b_id))
        .await;
    b.clone().stop().await.unwrap();
    seen_a
        .wait_for("A to report B gone", |r| {
            r.disconnected.lock().unwrap().contains(&b_id)
        })
        .await;
    let connected = seen_a.connected.lock().unwrap().clone();
    assert_eq!(connected.len(), 1, "{connected:?}");
    assert_eq!(connected[0].discovered, Discovery::Static);
    assert_eq!(connected[0].server_name.as_deref(), Some(&*b.server_name()));
    a.clone().stop().await.unwrap();
}

#[tokio::test]
async fn every_listener_hears_every_event_until_its_handle_goes() {
    let dir = tempfile::tempdir().unwrap();
    let hs = Homeserver::new(config(&dir)).unwrap();
    let (first, first_handle) = Recorder::install(&hs);
    let (second, second_handle) = Recorder::install(&hs);
    let (third, third_handle) = Recorder::install(&hs);
    let running = vec![HomeserverState::Starting, HomeserverState::Running];
    hs.clone().start().await.unwrap();
    for r in [&first, &second, &third] {
        assert_eq!(r.states(), running);
    }

    // Cancelled (twice: the second time does nothing) or dropped: no more callbacks.
    first_handle.cancel();
    first_handle.cancel();
    drop(second_handle);
    hs.clone().stop().await.unwrap();
    assert_eq!(first.states(), running);
    assert_eq!(second.states(), running);
    assert_eq!(
        third.states(),
        [
            &running[..],
            &[HomeserverState::Stopping, HomeserverState::Stopped]
        ]
        .concat()
    );
    drop(hs);
    // A handle may outlive its homeserver.
    third_handle.cancel();
}

#[tokio::test]
async fn peer_calls_while_stopped_or_without_a_network() {
    let dir = tempfile::tempdir().unwrap();
    let hs = Homeserver::new(config(&dir)).unwrap();
    assert!(hs.clone().peers().await.unwrap().is_empty());
    let addr = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", hs.peer_id());
    assert!(matches!(
        hs.clone().add_peer(addr.clone()).await,
        Err(NeuriteError::NotRunning)
    ));
    // Remembered while stopped: the next start begins offline.
    hs.clone().set_network_enabled(false).await.unwrap();
    hs.clone().start().await.unwrap();
    assert!(hs.listen_addrs().is_empty());
    assert!(matches!(
        hs.clone().add_peer(addr.clone()).await,
        Err(NeuriteError::Network { .. })
    ));
    hs.clone().set_network_enabled(true).await.unwrap();
    assert!(!hs.listen_addrs().is_empty());
    hs.clone().stop().await.unwrap();

    // Without peer-to-peer networking, there are no peers and nothing to switch.
    let bare_dir = tempfile::tempdir().unwrap();
    let mut bare = config(&bare_dir);
    bare.p2p_listen.clear();
    let bare = Homeserver::new(bare).unwrap();
    bare.clone().start().await.unwrap();
    assert!(bare.clone().peers().await.unwrap().is_empty());
    bare.clone().set_network_enabled(false).await.unwrap();
    assert!(matches!(
        bare.clone().add_peer(addr).await,
        Err(NeuriteError::Network { .. })
    ));
    bare.clone().stop().await.unwrap();
}
