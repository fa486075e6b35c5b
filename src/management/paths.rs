//! Parsing management API paths. AWS SDKs percent-encode the whole path
//! (`/prod/%40connections/abc%3D`), so each segment is decoded before it is matched, and
//! every path may carry a stage prefix. Pure; fuzzed.

use percent_encoding::percent_decode_str;

use crate::cluster::GroupName;
use crate::connections::ConnectionId;

/// What a management path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/healthz`.
    Health,
    /// `/@connections`: the listing of every connection.
    Connections,
    /// `/@connections/{id}`.
    Connection(ConnectionId),
    /// `/@groups/{group}`: broadcast to the group.
    Group(GroupName),
    /// `/@groups/{group}/members`: the listing of its members.
    GroupMembers(GroupName),
    /// `/@groups/{group}/members/{id}`: one membership.
    GroupMember(GroupName, ConnectionId),
    /// `/@broadcast`: every connection.
    Broadcast,
    /// `/readyz`.
    Ready,
    /// `/metrics`.
    Metrics,
    /// `/admin/drain`.
    AdminDrain,
}

impl Target {
    /// The methods this target accepts (the `Allow` header of a 405).
    pub fn methods(&self) -> &'static str {
        match self {
            Self::Health
            | Self::Ready
            | Self::Metrics
            | Self::Connections
            | Self::GroupMembers(_) => "GET",
            Self::Connection(_) => "POST, GET, DELETE",
            Self::Group(_) | Self::Broadcast | Self::AdminDrain => "POST",
            Self::GroupMember(..) => "PUT, DELETE",
        }
    }
}

/// Why a path names nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// No such resource.
    NotFound,
    /// A connection id segment that is not a well-formed id (the decoded text).
    InvalidConnectionId(String),
    /// A group segment that is not a valid group name (the decoded text).
    InvalidGroup(String),
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
        ["readyz"] => return Ok(Target::Ready),
        ["metrics"] => return Ok(Target::Metrics),
        ["admin", "drain"] => return Ok(Target::AdminDrain),
        [stage, rest @ ..]
            if is_stage(stage) && rest.first().is_some_and(|s| s.starts_with('@')) =>
        {
            rest
        }
        rest => rest,
    };
    let id = |text: &str| {
        ConnectionId::parse(text).ok_or_else(|| PathError::InvalidConnectionId(text.to_owned()))
    };
    let group =
        |text: &str| GroupName::parse(text).ok_or_else(|| PathError::InvalidGroup(text.to_owned()));
    match rest {
        ["@connections"] => Ok(Target::Connections),
        ["@connections", conn] => Ok(Target::Connection(id(conn)?)),
        ["@broadcast"] => Ok(Target::Broadcast),
        ["@groups", g] => Ok(Target::Group(group(g)?)),
        ["@groups", g, "members"] => Ok(Target::GroupMembers(group(g)?)),
        ["@groups", g, "members", conn] => Ok(Target::GroupMember(group(g)?, id(conn)?)),
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
        assert_eq!(p("/@connections"), Ok(Target::Connections));
        assert_eq!(p("/prod/@broadcast"), Ok(Target::Broadcast));
    }

    #[test]
    fn parses_group_paths() {
        let id = ConnectionId::new(NodeTag([1, 2, 3, 4]));
        let g = GroupName::parse("room-1").unwrap();
        assert_eq!(p("/@groups/room-1"), Ok(Target::Group(g.clone())));
        assert_eq!(
            p("/prod/%40groups/room-1/members"),
            Ok(Target::GroupMembers(g.clone()))
        );
        assert_eq!(
            p(&format!("/@groups/room-1/members/{id}")),
            Ok(Target::GroupMember(g, id))
        );
        assert_eq!(
            p("/@groups/a%20b"),
            Err(PathError::InvalidGroup("a b".into()))
        );
        assert_eq!(
            p("/@groups/ok/members/bad"),
            Err(PathError::InvalidConnectionId("bad".into()))
        );
    }

    #[test]
    fn refuses_other_paths() {
        assert_eq!(p("/"), Err(PathError::NotFound));
        assert_eq!(
            p("/dev/@connections/AAAAAAAAAAAAAAAA"),
            Err(PathError::NotFound)
        );
        assert_eq!(p("/@connections/a/b"), Err(PathError::NotFound));
        assert_eq!(p("/@groups"), Err(PathError::NotFound));
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
