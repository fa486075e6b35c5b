//! Parsing management API paths. AWS SDKs percent-encode the whole path
//! (`/prod/%40connections/abc%3D`), so each segment is decoded before it is matched.
//! Pure; fuzzed.

use percent_encoding::percent_decode_str;

use crate::connections::ConnectionId;

/// What a management path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `GET /healthz`.
    Health,
    /// `[/{stage}]/@connections/{id}`.
    Connection(ConnectionId),
}

/// Why a path names nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// No such resource.
    NotFound,
    /// The `@connections` id segment is not a well-formed id (the decoded text).
    InvalidConnectionId(String),
}

/// Parses a raw (still percent-encoded) path. `is_stage` says whether a first segment is
/// one of the API's stages.
pub fn parse(raw_path: &str, is_stage: impl Fn(&str) -> bool) -> Result<Target, PathError> {
    let segments: Vec<String> = raw_path
        .strip_prefix('/')
        .unwrap_or(raw_path)
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let rest = match segments.as_slice() {
        ["healthz"] => return Ok(Target::Health),
        [stage, rest @ ..] if is_stage(stage) && rest.first() == Some(&"@connections") => rest,
        rest => rest,
    };
    match rest {
        ["@connections", id] => ConnectionId::parse(id)
            .map(Target::Connection)
            .ok_or_else(|| PathError::InvalidConnectionId((*id).to_owned())),
        _ => Err(PathError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::NodeTag;

    fn p(path: &str) -> Result<Target, PathError> {
        parse(path, |s| s == "prod")
    }

    #[test]
    fn parses_connection_paths() {
        let id = ConnectionId::new(NodeTag([1, 2, 3, 4]));
        let text = id.to_string();
        let want = Ok(Target::Connection(id));
        assert_eq!(p(&format!("/@connections/{text}")), want);
        assert_eq!(p(&format!("/prod/@connections/{text}")), want);
        assert_eq!(p(&format!("/prod/%40connections/{text}")), want);
        assert_eq!(
            p(&format!("/%40connections/{}", text.replace('-', "%2D"))),
            want
        );
        assert_eq!(p("/healthz"), Ok(Target::Health));
    }

    #[test]
    fn refuses_other_paths() {
        assert_eq!(p("/"), Err(PathError::NotFound));
        assert_eq!(p("/@connections"), Err(PathError::NotFound));
        assert_eq!(
            p("/dev/@connections/AAAAAAAAAAAAAAAA"),
            Err(PathError::NotFound)
        );
        assert_eq!(p("/@connections/a/b"), Err(PathError::NotFound));
        assert_eq!(
            p("/@connections/bad%3D"),
            Err(PathError::InvalidConnectionId("bad=".into()))
        );
        assert_eq!(
            p("/@connections/%FF%FE"),
            Err(PathError::InvalidConnectionId("\u{fffd}\u{fffd}".into()))
        );
    }
}
