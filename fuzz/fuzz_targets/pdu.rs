//! A PDU from another server, through the checks every inbound path applies before the room
//! graph sees it: size and reference counts, the signatures its servers must make, the content
//! hash (redacting on mismatch), the event id, then the parse into the graph's PDU type.
//!
//! Input: one mode byte, then the event's JSON. Mode bits: 0-1 pick the room version; 2 has
//! the fixed test server hash and sign the event first (so well-formed events from that
//! server get through the signature check); 3 then changes its content, which the content
//! hash must catch. `%S` in the JSON stands for the test server's name.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use neurite_core::fuzzing::{
    CanonicalJsonObject, CanonicalJsonValue, Identity, Pdu, room_version_rules, sign_pdu,
    verify_pdu_keyed,
};

static SERVER: LazyLock<Identity> =
    LazyLock::new(|| Identity::from_seed(&[0x5a; 32]).expect("identity"));

fuzz_target!(|data: &[u8]| {
    let Some((&mode, json)) = data.split_first() else {
        return;
    };
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    let version = ["10", "11", "12", "9"][usize::from(mode & 3)];
    let rules = room_version_rules(version).expect("supported version");
    let json = json.replace("%S", SERVER.server_name().as_str());
    // As `/send` reads it: the transaction parsed to JSON values, each PDU then taken as a
    // canonical JSON object.
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) else {
        return;
    };
    let Ok(mut obj) = serde_json::from_value::<CanonicalJsonObject>(value) else {
        return;
    };
    let signed = mode & 4 != 0 && sign_pdu(&mut obj, &SERVER, &rules);
    let tampered = signed && mode & 8 != 0;
    if tampered {
        match obj.get_mut("content") {
            Some(CanonicalJsonValue::Object(content)) => {
                content.insert("tampered".into(), CanonicalJsonValue::Bool(true));
            }
            _ => {
                obj.insert(
                    "content".into(),
                    CanonicalJsonValue::Object(Default::default()),
                );
            }
        }
    }
    let Ok((event_id, verified)) = verify_pdu_keyed(obj, &rules) else {
        return;
    };
    if tampered {
        // A content hash that does not match leaves only what redaction keeps.
        if let Some(CanonicalJsonValue::Object(content)) = verified.get("content") {
            assert!(!content.contains_key("tampered"), "tampered content kept");
        }
    }
    // Verifying the result again gives the same event.
    let again = verify_pdu_keyed(verified.clone(), &rules).map(|(id, _)| id);
    assert_eq!(again.as_ref().ok(), Some(&event_id), "{again:?}");
    let _ = Pdu::from_object(event_id, &verified);
});
