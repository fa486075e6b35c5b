//! `[resume]`: resumable sessions (the `switchboard.resume.v1` subprotocol, docs/resume.md):
//! whether they are offered, how long a dropped session is kept, and the bounds of each
//! session's history.

use serde::Deserialize;

use super::ConfigError;

/// `[resume]`: resumable sessions (off by default; a client must also ask for them).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResumeSettings {
    /// Offer resumable sessions to clients that ask with the subprotocol.
    pub enabled: bool,
    /// Seconds a dropped session is kept for a resume; then `$disconnect` fires.
    pub window_secs: u64,
    /// Most frames a session's history keeps (numbered frames not yet acknowledged).
    pub max_messages: usize,
    /// Most payload bytes a session's history keeps.
    pub max_bytes: usize,
    /// Most sessions suspended at once on this node; a drop beyond it closes the
    /// connection at once (`$disconnect`), as without resume.
    pub max_suspended: usize,
}

impl Default for ResumeSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            window_secs: 30,
            max_messages: 1000,
            max_bytes: 1 << 20,
            max_suspended: 100_000,
        }
    }
}

impl ResumeSettings {
    /// Checks the ranges, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.window_secs) {
            return Err(ConfigError::invalid(
                "resume.window_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_messages) {
            return Err(ConfigError::invalid(
                "resume.max_messages",
                "must be between 1 and 1000000",
            ));
        }
        if !(1024..=1 << 30).contains(&self.max_bytes) {
            return Err(ConfigError::invalid(
                "resume.max_bytes",
                "must be between 1024 and 1073741824",
            ));
        }
        if self.max_suspended == 0 {
            return Err(ConfigError::invalid(
                "resume.max_suspended",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                ResumeSettings {
                    window_secs: 0,
                    ..Default::default()
                },
                "resume.window_secs",
            ),
            (
                ResumeSettings {
                    max_messages: 0,
                    ..Default::default()
                },
                "resume.max_messages",
            ),
            (
                ResumeSettings {
                    max_bytes: 10,
                    ..Default::default()
                },
                "resume.max_bytes",
            ),
            (
                ResumeSettings {
                    max_suspended: 0,
                    ..Default::default()
                },
                "resume.max_suspended",
            ),
        ];
        for (settings, key) in cases {
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        }
        assert!(ResumeSettings::default().validate().is_ok());
    }
}
