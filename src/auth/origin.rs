//! The browser `Origin` allowlist: a handshake whose `Origin` matches none of the
//! configured patterns is refused with 403 before any authorizer runs.
//!
//! It guards against other sites' pages opening sockets with a user's cookies; it does not
//! authenticate anyone (a non-browser client sets whatever `Origin` it likes, or none), so a
//! handshake without `Origin` is not checked. Patterns compare case-insensitively and may
//! use `*` (`https://*.example.com`).

use super::{Refusal, glob_match};

/// Allowed origins, lowercased.
#[derive(Debug, Clone)]
pub struct Allowlist {
    patterns: Vec<String>,
}

impl Allowlist {
    /// An allowlist of `patterns`.
    pub fn new(patterns: &[String]) -> Self {
        Self {
            patterns: patterns
                .iter()
                .map(|p| p.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Accepts a missing origin or one that matches a pattern; refuses the rest with 403.
    pub fn check(&self, origin: Option<&str>) -> Result<(), Refusal> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let origin = origin.trim().to_ascii_lowercase();
        if self.patterns.iter().any(|p| glob_match(p, &origin)) {
            Ok(())
        } else {
            Err(Refusal::forbidden("origin not allowed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_origins() {
        let list = Allowlist::new(&[
            "https://app.example.com".into(),
            "https://*.trusted.dev/".into(),
        ]);
        assert!(list.check(None).is_ok());
        assert!(list.check(Some("https://app.example.com")).is_ok());
        assert!(list.check(Some("HTTPS://APP.EXAMPLE.COM")).is_ok());
        assert!(list.check(Some("https://a.trusted.dev")).is_ok());
        let refused = list.check(Some("https://evil.example")).unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(list.check(Some("http://app.example.com")).is_err());
        assert!(list.check(Some("null")).is_err());
    }
}
