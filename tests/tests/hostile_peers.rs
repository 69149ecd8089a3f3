//! Hostile peers: a server of the tests' own ([`EvilPeer`]) signs whatever it likes and sends
//! it through the real federation path to a real node, which must not let it take over its
//! users' view of their rooms.

use neurite_tests::{TestNode, assert_error, assert_status, evil::EvilPeer};
use reqwest::Method;

#[tokio::test]
async fn the_evil_peer_speaks_signed_federation() {
    let node = TestNode::start().await;
    let evil = EvilPeer::connect(&node).await;
    assert_ne!(evil.server_name(), node.server_name());
    assert_eq!(evil.server_name().len(), 52);

    let version = assert_status(
        &evil
            .request(Method::GET, "/_matrix/federation/v1/version", None)
            .await,
        200,
    );
    assert_eq!(version["server"]["name"], "Neurite");
    // The node checks what it gets: a request without a signature is refused.
    let path = "/_matrix/federation/v1/query/profile?user_id=%40a%3Ab";
    assert_error(
        &evil.request_with_auth(Method::GET, path, None, None).await,
        401,
        "M_UNAUTHORIZED",
    );
}
