//! Management API paths and connection ids: arbitrary (percent-encoded) paths must parse
//! to a target or a clean error, and every id that parses prints back to a path that names
//! the same connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::connections::ConnectionId;
use switchboard::management::paths::{self, PathError, Target};

fuzz_target!(|path: &str| {
    let parsed = paths::parse(path, |s| s == "prod");
    match &parsed {
        Ok(Target::Connection(id)) | Ok(Target::GroupMember(_, id)) => {
            let text = id.to_string();
            assert_eq!(ConnectionId::parse(&text), Some(*id));
            assert_eq!(
                paths::parse(&format!("/prod/%40connections/{text}"), |s| s == "prod"),
                Ok(Target::Connection(*id))
            );
        }
        Err(PathError::InvalidConnectionId(text)) => {
            assert_eq!(ConnectionId::parse(text), None);
        }
        _ => {}
    }
    // The id parser alone, on the raw text.
    if let Some(id) = ConnectionId::parse(path) {
        assert_eq!(id.to_string(), path);
    }
});
