//! Authentication of management callers: bearer tokens compared in constant time, or
//! none when the operator chose `auth = "none"` explicitly. Tokens are never logged.

use http::{HeaderMap, header};
use subtle::ConstantTimeEq as _;

use crate::config::{ManagementAuth, ManagementSettings};

/// Whether the request's credentials are accepted.
pub fn is_authorized(settings: &ManagementSettings, headers: &HeaderMap) -> bool {
    match settings.auth {
        ManagementAuth::None => true,
        ManagementAuth::Bearer => {
            let Some(token) = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
            else {
                return false;
            };
            // Check every token so timing does not reveal which one matched.
            settings.bearer_tokens.iter().fold(false, |ok, t| {
                ok | bool::from(t.expose().as_bytes().ct_eq(token.trim().as_bytes()))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings() -> ManagementSettings {
        ManagementSettings {
            bearer_tokens: vec![
                Secret::new("old-token-0123456789"),
                Secret::new("new-token-0123456789"),
            ],
            ..ManagementSettings::default()
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn accepts_any_configured_token() {
        let s = settings();
        assert!(is_authorized(&s, &headers("Bearer old-token-0123456789")));
        assert!(is_authorized(&s, &headers("Bearer new-token-0123456789")));
        assert!(!is_authorized(&s, &headers("Bearer other-token-0123456")));
        assert!(!is_authorized(&s, &headers("Basic old-token-0123456789")));
        assert!(!is_authorized(&s, &HeaderMap::new()));
    }

    #[test]
    fn none_accepts_everyone() {
        let s = ManagementSettings {
            auth: ManagementAuth::None,
            ..ManagementSettings::default()
        };
        assert!(is_authorized(&s, &HeaderMap::new()));
    }
}
