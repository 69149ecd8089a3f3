//! `X-Matrix` request signatures, and the verify keys Neurite names encode.
//!
//! A request from server X is accepted only if its `X-Matrix` signature verifies against the
//! key X's name encodes, its `destination` is this node, and X is the peer at the other end
//! of the Noise-authenticated connection that carried it.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    signatures::{sign_json, verify_json},
};

use crate::identity::{Identity, KEY_ID, key_for_server_name, public_key_map};

/// The parsed parameters of an `Authorization: X-Matrix …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// The requesting server.
    pub origin: String,
    /// The server the request is for.
    pub destination: Option<String>,
    /// Key id, e.g. `ed25519:p2p`.
    pub key: String,
    /// Base64 signature.
    pub sig: String,
}

impl XMatrix {
    /// Parses the header value (`X-Matrix origin="…",destination="…",key="…",sig="…"`).
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("x-matrix") {
            return None;
        }
        let mut fields = BTreeMap::new();
        for part in params.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            fields.insert(k.trim().to_ascii_lowercase(), v.to_owned());
        }
        Some(Self {
            origin: fields.remove("origin")?,
            destination: fields.remove("destination"),
            key: fields.remove("key")?,
            sig: fields.remove("sig")?,
        })
    }

    /// Formats the header value.
    pub fn header(&self) -> String {
        let dest = self
            .destination
            .as_deref()
            .map(|d| format!(",destination=\"{d}\""))
            .unwrap_or_default();
        format!(
            "X-Matrix origin=\"{}\"{dest},key=\"{}\",sig=\"{}\"",
            self.origin, self.key, self.sig
        )
    }
}

fn request_object(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&serde_json::Value>,
) -> Option<CanonicalJsonObject> {
    let mut obj = CanonicalJsonObject::new();
    obj.insert(
        "method".into(),
        CanonicalJsonValue::String(method.to_owned()),
    );
    obj.insert("uri".into(), CanonicalJsonValue::String(uri.to_owned()));
    obj.insert(
        "origin".into(),
        CanonicalJsonValue::String(origin.to_owned()),
    );
    obj.insert(
        "destination".into(),
        CanonicalJsonValue::String(destination.to_owned()),
    );
    if let Some(c) = content {
        obj.insert(
            "content".into(),
            CanonicalJsonValue::try_from(c.clone()).ok()?,
        );
    }
    Some(obj)
}

/// Signs a request as this node; returns the `Authorization` header value.
pub fn sign_request(
    identity: &Identity,
    method: &str,
    uri: &str,
    destination: &str,
    content: Option<&serde_json::Value>,
) -> Option<String> {
    let origin = identity.server_name().as_str();
    let mut obj = request_object(method, uri, origin, destination, content)?;
    sign_json(origin, identity.key_pair(), &mut obj).ok()?;
    let sig = match obj.get("signatures")? {
        CanonicalJsonValue::Object(by_server) => match by_server.get(origin)? {
            CanonicalJsonValue::Object(by_key) => match by_key.get(KEY_ID)? {
                CanonicalJsonValue::String(s) => s.clone(),
                _ => return None,
            },
            _ => return None,
        },
        _ => return None,
    };
    Some(
        XMatrix {
            origin: origin.to_owned(),
            destination: Some(destination.to_owned()),
            key: KEY_ID.to_owned(),
            sig,
        }
        .header(),
    )
}

/// Why a request's signature was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No or unparsable `Authorization` header.
    Missing,
    /// Signed for another server.
    WrongDestination,
    /// The origin is not a Neurite name, or uses another key id.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
}

/// Checks what the `Authorization` header alone can tell: an `X-Matrix` header for this node
/// (`local`) with the one key id Neurite uses and an origin that is a Neurite name. Done before
/// the body is read, so a request that cannot be right costs nothing more.
pub fn check_header(header: Option<&str>, local: &str) -> Result<XMatrix, AuthFailure> {
    let x = header
        .and_then(XMatrix::parse)
        .ok_or(AuthFailure::Missing)?;
    if x.destination.as_deref().is_some_and(|d| d != local) {
        return Err(AuthFailure::WrongDestination);
    }
    if x.key != KEY_ID || public_key_map(&x.origin).is_none() {
        return Err(AuthFailure::UnknownKey);
    }
    Ok(x)
}

/// Verifies the signature of a request whose header passed [`check_header`], over the body
/// exactly as received (`body` empty for none).
///
/// A body sent as canonical JSON (as Neurite sends it) is checked over its bytes as they
/// are, with nothing parsed. Otherwise it is parsed once into canonical form and checked
/// again; callers bound its shape first (see [`super::bounded::check_shape`]).
pub fn verify_body(
    x: &XMatrix,
    local: &str,
    method: &str,
    uri: &str,
    body: &[u8],
) -> Result<(), AuthFailure> {
    let key = key_for_server_name(&x.origin).ok_or(AuthFailure::UnknownKey)?;
    let signature = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(&x.sig)
        .map_err(|_| AuthFailure::BadSignature)?;
    let verify = |message: &[u8]| {
        ruma::signatures::verify_canonical_json_bytes(
            &ruma::signatures::SigningKeyAlgorithm::Ed25519,
            key.as_bytes(),
            signature.as_bytes(),
            message,
        )
        .is_ok()
    };
    if body.is_empty() {
        return if verify(&signed_bytes(&x.origin, local, method, uri, None)) {
            Ok(())
        } else {
            Err(AuthFailure::BadSignature)
        };
    }
    if verify(&signed_bytes(&x.origin, local, method, uri, Some(body))) {
        return Ok(());
    }
    let content: CanonicalJsonValue =
        serde_json::from_slice(body).map_err(|_| AuthFailure::BadSignature)?;
    let canonical = serde_json::to_vec(&content).map_err(|_| AuthFailure::BadSignature)?;
    drop(content);
    if canonical.as_slice() == body {
        // Already canonical: the check above was the real one.
        return Err(AuthFailure::BadSignature);
    }
    if verify(&signed_bytes(
        &x.origin,
        local,
        method,
        uri,
        Some(&canonical),
    )) {
        Ok(())
    } else {
        Err(AuthFailure::BadSignature)
    }
}

/// The bytes a request's signature covers, given its content as canonical JSON: the request
/// object with its keys in canonical (sorted) order, content, destination, method, origin,
/// uri.
fn signed_bytes(
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&[u8]>,
) -> Vec<u8> {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let tail = format!(
        "\"destination\":{},\"method\":{},\"origin\":{},\"uri\":{}}}",
        text(destination),
        text(method),
        text(origin),
        text(uri)
    );
    let mut message = Vec::with_capacity(content.map_or(0, <[u8]>::len) + tail.len() + 16);
    message.push(b'{');
    if let Some(content) = content {
        message.extend_from_slice(b"\"content\":");
        message.extend_from_slice(content);
        message.push(b',');
    }
    message.extend_from_slice(tail.as_bytes());
    message
}

/// Verifies a signed request addressed to `local`; returns the origin.
pub fn verify_request(
    header: Option<&str>,
    local: &str,
    method: &str,
    uri: &str,
    content: Option<&serde_json::Value>,
) -> Result<String, AuthFailure> {
    let x = header
        .and_then(XMatrix::parse)
        .ok_or(AuthFailure::Missing)?;
    if x.destination.as_deref().is_some_and(|d| d != local) {
        return Err(AuthFailure::WrongDestination);
    }
    if x.key != KEY_ID {
        return Err(AuthFailure::UnknownKey);
    }
    let keys = public_key_map(&x.origin).ok_or(AuthFailure::UnknownKey)?;
    let mut obj =
        request_object(method, uri, &x.origin, local, content).ok_or(AuthFailure::BadSignature)?;
    let sigs = CanonicalJsonObject::from([(
        x.origin.clone(),
        CanonicalJsonValue::Object(CanonicalJsonObject::from([(
            KEY_ID.to_owned(),
            CanonicalJsonValue::String(x.sig.clone()),
        )])),
    )]);
    obj.insert("signatures".into(), CanonicalJsonValue::Object(sigs));
    verify_json(&keys, &obj).map_err(|_| AuthFailure::BadSignature)?;
    Ok(x.origin)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_origin_in_upper_case_is_no_server_even_when_its_key_signed() {
        let a = Identity::from_seed(&[1u8; 32]).unwrap();
        let b = Identity::from_seed(&[2u8; 32]).unwrap();
        let dest = b.server_name().as_str();
        // Signed by a's key, for the name a's key would have in upper case.
        let upper = a.server_name().as_str().to_ascii_uppercase();
        let mut obj = request_object("GET", "/x", &upper, dest, None).unwrap();
        sign_json(&upper, a.key_pair(), &mut obj).unwrap();
        let Some(CanonicalJsonValue::Object(sigs)) = obj.get("signatures") else {
            panic!("no signatures");
        };
        let Some(CanonicalJsonValue::Object(by_key)) = sigs.get(&upper) else {
            panic!("no signature of {upper}");
        };
        let Some(CanonicalJsonValue::String(sig)) = by_key.get(KEY_ID) else {
            panic!("no {KEY_ID} signature");
        };
        let header = XMatrix {
            origin: upper.clone(),
            destination: Some(dest.to_owned()),
            key: KEY_ID.to_owned(),
            sig: sig.clone(),
        }
        .header();
        assert_eq!(
            verify_request(Some(&header), dest, "GET", "/x", None),
            Err(AuthFailure::UnknownKey)
        );
        // The same request under the real name goes through.
        let header = sign_request(&a, "GET", "/x", dest, None).unwrap();
        assert_eq!(
            verify_request(Some(&header), dest, "GET", "/x", None).as_deref(),
            Ok(a.server_name().as_str())
        );
    }

    #[test]
    fn signed_request_verifies_and_tampering_fails() {
        let a = Identity::from_seed(&[1u8; 32]).unwrap();
        let b = Identity::from_seed(&[2u8; 32]).unwrap();
        let dest = b.server_name().as_str();
        let body = json!({ "pdus": [] });
        let header = sign_request(
            &a,
            "PUT",
            "/_matrix/federation/v1/send/1",
            dest,
            Some(&body),
        )
        .unwrap();
        let origin = verify_request(
            Some(&header),
            dest,
            "PUT",
            "/_matrix/federation/v1/send/1",
            Some(&body),
        );
        assert_eq!(origin.as_deref(), Ok(a.server_name().as_str()));

        let other_body = json!({ "pdus": [1] });
        let tampered = verify_request(
            Some(&header),
            dest,
            "PUT",
            "/_matrix/federation/v1/send/1",
            Some(&other_body),
        );
        assert_eq!(tampered, Err(AuthFailure::BadSignature));
        let wrong_dest = verify_request(
            Some(&header),
            a.server_name().as_str(),
            "PUT",
            "/x",
            Some(&body),
        );
        assert_eq!(wrong_dest, Err(AuthFailure::WrongDestination));
        // Claiming to be b while signing with a's key fails: b's name encodes b's key.
        let forged = header.replace(a.server_name().as_str(), b.server_name().as_str());
        let forged = verify_request(
            Some(&forged),
            dest,
            "PUT",
            "/_matrix/federation/v1/send/1",
            Some(&body),
        );
        assert!(forged.is_err());
    }

    #[test]
    fn bodies_verify_as_sent_or_in_canonical_form() {
        let a = Identity::from_seed(&[1u8; 32]).unwrap();
        let b = Identity::from_seed(&[2u8; 32]).unwrap();
        let dest = b.server_name().as_str();
        let path = "/_matrix/federation/v1/send/1";
        let body = json!({ "pdus": [], "origin": "x", "z": { "é": "\u{1}\"" } });
        let header = sign_request(&a, "PUT", path, dest, Some(&body)).unwrap();
        let x = check_header(Some(&header), dest).expect("header");
        // As Neurite sends it: its bytes are the canonical form, so the signature is checked
        // over them as they are, nothing parsed.
        let canonical = serde_json::to_vec(&body).unwrap();
        let origin = a.server_name().as_str();
        let object = request_object("PUT", path, origin, dest, Some(&body)).unwrap();
        assert_eq!(
            ruma::signatures::to_canonical_json_string_for_signing(&object)
                .unwrap()
                .as_bytes(),
            signed_bytes(origin, dest, "PUT", path, Some(&canonical)).as_slice()
        );
        let object = request_object("GET", "/x?a=%22", origin, dest, None).unwrap();
        assert_eq!(
            ruma::signatures::to_canonical_json_string_for_signing(&object)
                .unwrap()
                .as_bytes(),
            signed_bytes(origin, dest, "GET", "/x?a=%22", None).as_slice()
        );
        // And with whitespace and keys out of order.
        assert_eq!(verify_body(&x, dest, "PUT", path, &canonical), Ok(()));
        let loose = br#"{ "z": {"\u00e9": "\u0001\""}, "pdus": [ ], "origin": "x" }"#;
        assert_eq!(verify_body(&x, dest, "PUT", path, loose), Ok(()));
        assert_eq!(
            verify_body(&x, dest, "PUT", path, br#"{"pdus":[1],"origin":"x"}"#),
            Err(AuthFailure::BadSignature)
        );
        assert_eq!(
            verify_body(&x, dest, "PUT", path, b"not json"),
            Err(AuthFailure::BadSignature)
        );
        assert_eq!(
            verify_body(&x, dest, "GET", path, &canonical),
            Err(AuthFailure::BadSignature)
        );
        // No body.
        let header = sign_request(&a, "GET", "/x", dest, None).unwrap();
        let x = check_header(Some(&header), dest).expect("header");
        assert_eq!(verify_body(&x, dest, "GET", "/x", b""), Ok(()));
        assert_eq!(
            verify_body(&x, dest, "GET", "/y", b""),
            Err(AuthFailure::BadSignature)
        );
        assert_eq!(
            check_header(Some(&header), a.server_name().as_str()).err(),
            Some(AuthFailure::WrongDestination)
        );
        assert_eq!(
            check_header(
                Some("X-Matrix origin=\"nope\",key=\"ed25519:p2p\",sig=\"x\""),
                dest
            )
            .err(),
            Some(AuthFailure::UnknownKey)
        );
    }

    #[test]
    fn header_round_trips() {
        let x = XMatrix {
            origin: "o".into(),
            destination: Some("d".into()),
            key: KEY_ID.into(),
            sig: "s".into(),
        };
        assert_eq!(XMatrix::parse(&x.header()), Some(x));
        assert_eq!(XMatrix::parse("Bearer abc"), None);
    }
}
