//! The proxy-response parser on arbitrary backend answers: never a panic, and the shape
//! rules hold (a plain body passes through unchanged; a proxy answer has a 100–599 status).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard::integrations::proxy_response;

fuzz_target!(|data: &[u8]| {
    let raw = Bytes::copy_from_slice(data);
    match proxy_response::parse(raw) {
        Ok(result) => match result.status {
            Some(status) => assert!((100..=599).contains(&status)),
            None => {
                assert!(!result.binary);
                assert_eq!(result.subprotocol, None);
                assert_eq!(result.body.as_deref(), (!data.is_empty()).then_some(data));
            }
        },
        Err(malformed) => {
            // Only a JSON object with a statusCode can be malformed.
            let value: serde_json::Value = serde_json::from_slice(data).expect("JSON");
            assert!(value.get("statusCode").is_some(), "{malformed}");
        }
    }
});
