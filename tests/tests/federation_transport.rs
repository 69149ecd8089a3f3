//! Federation requests over libp2p streams between real nodes on loopback: signatures,
//! destination and origin = authenticated peer.

use neurite_core::{
    federation::transport::FederationClient,
    identity::{Identity, peer_id_for_server_name},
};
use neurite_tests::TestNode;
use reqwest::Method;

fn client(node: &TestNode) -> FederationClient {
    node.node()
        .services()
        .federation()
        .expect("federation runs")
        .clone()
}

#[tokio::test]
async fn node_identity_is_one_key_for_matrix_and_libp2p() {
    let node = TestNode::start().await;
    let expected = peer_id_for_server_name(&node.server_name()).expect("neurite name");
    assert_eq!(node.node().peer_id(), expected.to_string());
    for addr in node.node().p2p_addrs() {
        assert!(addr.starts_with("/ip4/127.0.0.1/tcp/"), "{addr}");
        assert!(addr.ends_with(&format!("/p2p/{expected}")), "{addr}");
    }
}

#[tokio::test]
async fn signed_requests_travel_over_streams_and_keys_match_names() {
    let (a, b) = neurite_tests::node_pair().await;
    let alice_b = b.register("alice").await;
    alice_b
        .put_ok(
            &format!("/profile/{}/displayname", alice_b.user_id),
            serde_json::json!({ "displayname": "Alice B" }),
        )
        .await;

    let fed = client(&a);
    let version = fed
        .request(
            &b.server_name(),
            Method::GET,
            "/_matrix/federation/v1/version",
            None,
        )
        .await
        .unwrap();
    assert_eq!(version.status, 200);
    assert_eq!(version.body["server"]["name"], "Neurite");

    let keys = fed
        .request(
            &b.server_name(),
            Method::GET,
            "/_matrix/key/v2/server",
            None,
        )
        .await
        .unwrap();
    assert_eq!(keys.status, 200);
    assert_eq!(keys.body["server_name"], b.server_name());
    // The key served is the key the name encodes, and the response is signed by it.
    let map = neurite_core::identity::public_key_map(&b.server_name()).unwrap();
    let obj: ruma_obj::Obj = serde_json::from_value(keys.body.clone()).unwrap();
    assert!(
        ruma_obj::verify(&map, &obj),
        "key response must verify against the name's key"
    );

    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        neurite_tests::enc(&alice_b.user_id)
    );
    let profile = fed
        .request(&b.server_name(), Method::GET, &path, None)
        .await
        .unwrap();
    assert_eq!(profile.status, 200, "{:?}", profile.body);
    assert_eq!(profile.body["displayname"], "Alice B");
}

#[tokio::test]
async fn request_whose_origin_is_not_the_connected_peer_is_refused() {
    let (a, b) = neurite_tests::node_pair().await;
    // A client that signs as a third server but travels over a's connection.
    let impostor = Identity::from_seed(&[42u8; 32]).unwrap();
    let p2p = a.node().p2p().expect("p2p").clone();
    let forged = FederationClient::new(std::sync::Arc::new(impostor), p2p);
    let path = "/_matrix/federation/v1/query/profile?user_id=%40x%3Ay";
    let resp = forged
        .request(&b.server_name(), Method::GET, path, None)
        .await
        .unwrap();
    assert_eq!(resp.status, 403, "{:?}", resp.body);
    assert_eq!(resp.body["errcode"], "M_FORBIDDEN");
}

#[tokio::test]
async fn unknown_federation_endpoint_is_unrecognized() {
    let (a, b) = neurite_tests::node_pair().await;
    let resp = client(&a)
        .request(
            &b.server_name(),
            Method::GET,
            "/_matrix/federation/v1/nope",
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.body["errcode"], "M_UNRECOGNIZED");
}

/// Minimal canonical-JSON signature check, via ruma, for the key response.
mod ruma_obj {
    pub(crate) type Obj = ruma::CanonicalJsonObject;
    pub(crate) fn verify(map: &ruma::signatures::PublicKeyMap, obj: &Obj) -> bool {
        ruma::signatures::verify_json(map, obj).is_ok()
    }
}

/// Waits until `node` has an open connection to `peer`.
async fn connected(node: &TestNode, peer: &str) {
    let p2p = node.node().p2p().expect("p2p").clone();
    let mut events = p2p.subscribe();
    let deadline = tokio::time::Instant::now() + neurite_tests::WAIT;
    loop {
        if p2p
            .peers()
            .await
            .iter()
            .any(|p| p.connected && p.peer_id.to_string() == peer)
        {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no connection to {peer}");
        let _ = tokio::time::timeout(left, events.recv()).await;
    }
}

#[tokio::test]
async fn known_peers_are_redialled_after_a_restart() {
    let (a, b) = neurite_tests::node_pair().await;
    connected(&a, &b.node().peer_id()).await;
    // A restarts with no static peers: its address book brings B back.
    let dir = a.stop().await;
    let a = TestNode::start_in(dir, |_| {}).await;
    connected(&a, &b.node().peer_id()).await;
    let book = neurite_core::known_peers(neurite_core::Config::new(a.dir.path()))
        .await
        .unwrap();
    let entry = book
        .iter()
        .find(|p| p.peer_id == b.node().peer_id())
        .expect("b in a's address book");
    assert_eq!(entry.server_name.as_deref(), Some(b.server_name().as_str()));
    assert!(!entry.addresses.is_empty());
}
