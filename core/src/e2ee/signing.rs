//! Checking the ed25519 signatures on key objects (device keys, cross-signing keys).
//!
//! A signed JSON object is signed over its canonical JSON without `signatures` and
//! `unsigned`; keys and signatures are unpadded base64.

use data_encoding::BASE64_NOPAD;
use ed25519_dalek::{Signature, VerifyingKey};
use ruma::CanonicalJsonValue;
use serde_json::Value;

/// Why a signature did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The object carries no signature by that key.
    #[error("no signature by {0}")]
    Missing(String),
    /// The public key or the signature is not valid base64 of the right length.
    #[error("malformed key or signature")]
    Malformed,
    /// The object cannot be put in canonical JSON (e.g. it holds floats).
    #[error("object is not canonical JSON")]
    NotCanonical,
    /// The signature does not verify.
    #[error("signature does not verify")]
    Invalid,
}

/// Decodes base64 with or without padding.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    BASE64_NOPAD.decode(s.trim_end_matches('=').as_bytes()).ok()
}

/// The bytes a signature of `object` covers: its canonical JSON without `signatures` and
/// `unsigned`.
pub fn signed_bytes(object: &Value) -> Result<String, SignatureError> {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    let canonical =
        CanonicalJsonValue::try_from(object).map_err(|_| SignatureError::NotCanonical)?;
    Ok(canonical.to_string())
}

/// The signature `object` carries by `signer`'s key `key_id`, if any.
pub fn signature_in<'a>(object: &'a Value, signer: &str, key_id: &str) -> Option<&'a str> {
    object.get("signatures")?.get(signer)?.get(key_id)?.as_str()
}

/// Verifies `signature` (base64) of `object` by the ed25519 `public_key` (base64).
pub fn verify_signature(
    object: &Value,
    signature: &str,
    public_key: &str,
) -> Result<(), SignatureError> {
    let key: [u8; 32] = decode_base64(public_key)
        .and_then(|k| k.try_into().ok())
        .ok_or(SignatureError::Malformed)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| SignatureError::Malformed)?;
    let sig = decode_base64(signature)
        .and_then(|s| Signature::from_slice(&s).ok())
        .ok_or(SignatureError::Malformed)?;
    let message = signed_bytes(object)?;
    key.verify_strict(message.as_bytes(), &sig)
        .map_err(|_| SignatureError::Invalid)
}

/// Verifies that `object` is signed by `signer`'s key `ed25519:<key_name>` whose public key
/// is `public_key`.
pub fn verify_signed_by(
    object: &Value,
    signer: &str,
    key_name: &str,
    public_key: &str,
) -> Result<(), SignatureError> {
    let key_id = format!("ed25519:{key_name}");
    let signature =
        signature_in(object, signer, &key_id).ok_or(SignatureError::Missing(key_id.clone()))?;
    verify_signature(object, signature, public_key)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::json;

    use super::*;

    #[test]
    fn verifies_a_signature_over_canonical_json_and_rejects_a_changed_object() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = BASE64_NOPAD.encode(key.verifying_key().as_bytes());
        let mut object = json!({ "b": 1, "a": "x", "unsigned": { "n": 2 } });
        let sig = key.sign(signed_bytes(&object).unwrap().as_bytes());
        object["signatures"] =
            json!({ "@u:s": { "ed25519:K": BASE64_NOPAD.encode(&sig.to_bytes()) } });
        assert_eq!(verify_signed_by(&object, "@u:s", "K", &public), Ok(()));
        object["b"] = json!(2);
        assert_eq!(
            verify_signed_by(&object, "@u:s", "K", &public),
            Err(SignatureError::Invalid)
        );
        assert!(matches!(
            verify_signed_by(&object, "@u:s", "L", &public),
            Err(SignatureError::Missing(_))
        ));
    }
}
