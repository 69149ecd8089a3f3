//! `Authorization: X-Matrix …` headers and the request signatures they carry.
//!
//! Input: the header value, a NUL byte, then the request body. The header goes through the
//! parser, the checks made before the body is read and the signature check over the body as
//! received. Then the body, when it is JSON, is signed by a fixed server as a peer signs it
//! (over its canonical form) and must verify as received, whatever its spacing and key
//! order.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use neurite_core::fuzzing::{
    CanonicalJsonValue, Identity, XMatrix, check_header, sign_request, verify_body, verify_request,
};

static ORIGIN: LazyLock<Identity> =
    LazyLock::new(|| Identity::from_seed(&[0x5a; 32]).expect("identity"));
static LOCAL: LazyLock<Identity> =
    LazyLock::new(|| Identity::from_seed(&[0xa5; 32]).expect("identity"));

const URI: &str = "/_matrix/federation/v1/send/1";

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let header = header.replace("%S", ORIGIN.server_name().as_str());
    let local = LOCAL.server_name().as_str();

    if let Some(x) = XMatrix::parse(&header) {
        // Values without quotes or commas survive formatting and parsing again.
        let plain = |v: &str| !v.contains(['"', ',']);
        if [&x.origin, &x.key, &x.sig].iter().all(|v| plain(v))
            && x.destination.as_deref().is_none_or(plain)
        {
            assert_eq!(XMatrix::parse(&x.header()).as_ref(), Some(&x));
        }
    }
    if let Ok(x) = check_header(Some(&header), local) {
        let _ = verify_body(&x, local, "PUT", URI, body);
    }
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let _ = verify_request(Some(&header), local, "PUT", URI, json.as_ref());

    // What a peer signs verifies as received.
    let Some(json) = json else {
        return;
    };
    if CanonicalJsonValue::try_from(json.clone()).is_err() {
        return;
    }
    let signed = sign_request(&ORIGIN, "PUT", URI, local, Some(&json)).expect("signs");
    let x = check_header(Some(&signed), local).expect("own header passes");
    assert_eq!(verify_body(&x, local, "PUT", URI, body), Ok(()));
});
