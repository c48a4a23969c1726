//! What a client may do: actions, granted on stream patterns.
//!
//! A permission is written `action` or `action:pattern`, the same in the configuration, in a
//! JWT's claim and in the docs: `read:edge-1/*`, `read:*/lobby`, `read` (every stream), `api`,
//! `admin`, `metrics`. A pattern is `node/stream`, each half a name or `*`, or `*` alone for
//! every stream.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Watch a stream (any protocol).
    Read,
    /// Read the REST API.
    Api,
    /// Change things through the REST API (kick a viewer, stop a stream, revoke a node).
    Admin,
    /// Scrape `/metrics`.
    Metrics,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 4] = [Action::Read, Action::Api, Action::Admin, Action::Metrics];

    /// As written in permissions and sent to the hook.
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Api => "api",
            Action::Admin => "admin",
            Action::Metrics => "metrics",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One half of a pattern: a name, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Any,
    Name(String),
}

impl Part {
    fn parse(s: &str) -> Result<Self, PermissionError> {
        match s {
            "*" => Ok(Part::Any),
            "" => Err(PermissionError::EmptyName),
            s if s.contains('*') => Err(PermissionError::PartialWildcard(s.to_owned())),
            s => Ok(Part::Name(s.to_owned())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Name(n) => n == name,
        }
    }
}

/// Streams a permission covers: `node/stream` with `*` for either half, or `*` for all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPattern {
    node: Part,
    stream: Part,
}

impl StreamPattern {
    /// Every stream.
    pub const ALL: StreamPattern = StreamPattern { node: Part::Any, stream: Part::Any };

    /// Whether the stream `node/stream` is covered.
    pub fn matches(&self, node: &str, stream: &str) -> bool {
        self.node.matches(node) && self.stream.matches(stream)
    }
}

impl FromStr for StreamPattern {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            return Ok(Self::ALL);
        }
        let (node, stream) = s.split_once('/').ok_or_else(|| PermissionError::NotNodeSlashStream(s.to_owned()))?;
        if stream.contains('/') {
            return Err(PermissionError::NotNodeSlashStream(s.to_owned()));
        }
        Ok(Self { node: Part::parse(node)?, stream: Part::parse(stream)? })
    }
}

impl fmt::Display for StreamPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |p: &Part| match p {
            Part::Any => "*".to_owned(),
            Part::Name(n) => n.clone(),
        };
        match (&self.node, &self.stream) {
            (Part::Any, Part::Any) => f.write_str("*"),
            (n, s) => write!(f, "{}/{}", part(n), part(s)),
        }
    }
}

/// An action, on the streams of a pattern for `read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// The action.
    pub action: Action,
    /// For `read`, the streams; the other actions are not about a stream.
    pub streams: StreamPattern,
}

impl Permission {
    /// Whether this permission allows `action` (on `stream`, for `read`).
    pub fn allows(&self, action: Action, stream: Option<(&str, &str)>) -> bool {
        self.action == action && stream.is_none_or(|(node, name)| self.streams.matches(node, name))
    }
}

/// Why a permission cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    /// Not one of the actions.
    #[error("unknown action {0:?}; the actions are read, api, admin and metrics")]
    UnknownAction(String),
    /// A pattern on an action that is not about streams.
    #[error("{0} is not about a stream and takes no pattern")]
    PatternNotAllowed(Action),
    /// Not `node/stream` or `*`.
    #[error("stream pattern {0:?} is not node/stream (either may be *) or *")]
    NotNodeSlashStream(String),
    /// `cam*`: only whole names or `*`.
    #[error("{0:?}: a wildcard stands for a whole name (* or a name, not part of one)")]
    PartialWildcard(String),
    /// `/cam1`.
    #[error("a node or stream name in a pattern is empty")]
    EmptyName,
}

impl FromStr for Permission {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (action, pattern) = match s.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let action = match action.trim() {
            "read" => Action::Read,
            "api" => Action::Api,
            "admin" => Action::Admin,
            "metrics" => Action::Metrics,
            other => return Err(PermissionError::UnknownAction(other.to_owned())),
        };
        let streams = match pattern {
            None => StreamPattern::ALL,
            Some(p) if action == Action::Read => p.trim().parse()?,
            Some(_) => return Err(PermissionError::PatternNotAllowed(action)),
        };
        Ok(Self { action, streams })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.action, &self.streams) {
            (Action::Read, p) if *p != StreamPattern::ALL => write!(f, "read:{p}"),
            (a, _) => f.write_str(a.name()),
        }
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether any of `permissions` allows `action` (on `stream`).
pub fn allowed(permissions: &[Permission], action: Action, stream: Option<(&str, &str)>) -> bool {
    permissions.iter().any(|p| p.allows(action, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Permission {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_match_whole_names() {
        let cam1 = p("read:edge-1/cam1");
        assert!(cam1.allows(Action::Read, Some(("edge-1", "cam1"))));
        assert!(!cam1.allows(Action::Read, Some(("edge-1", "cam2"))));
        assert!(!cam1.allows(Action::Api, None));
        assert!(p("read:edge-1/*").allows(Action::Read, Some(("edge-1", "cam9"))));
        assert!(!p("read:edge-1/*").allows(Action::Read, Some(("edge-10", "cam9"))));
        assert!(p("read:*/lobby").allows(Action::Read, Some(("site-b", "lobby"))));
        assert!(p("read").allows(Action::Read, Some(("x", "y"))));
        assert!(p("read:*").allows(Action::Read, Some(("x", "y"))));
        assert!(p("metrics").allows(Action::Metrics, None));
    }

    #[test]
    fn bad_permissions_say_what_is_wrong() {
        let e = |s: &str| s.parse::<Permission>().unwrap_err();
        assert_eq!(e("watch"), PermissionError::UnknownAction("watch".into()));
        assert_eq!(e("api:edge-1/*"), PermissionError::PatternNotAllowed(Action::Api));
        assert_eq!(e("read:edge-1"), PermissionError::NotNodeSlashStream("edge-1".into()));
        assert_eq!(e("read:a/b/c"), PermissionError::NotNodeSlashStream("a/b/c".into()));
        assert_eq!(e("read:edge-*/cam1"), PermissionError::PartialWildcard("edge-*".into()));
        assert_eq!(e("read:/cam1"), PermissionError::EmptyName);
    }

    #[test]
    fn permissions_print_as_written() {
        for s in ["read:edge-1/*", "read:*/lobby", "read", "api", "admin", "metrics", "read:a/b"] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(p("read:*").to_string(), "read");
    }
}
