//! Container IDs, validated once at the edge.

use std::fmt;
use std::str::FromStr;

use crate::error::RuntimeError;

/// A container ID as runc accepts it: 1–1024 characters of `[A-Za-z0-9_+.-]`, not `.` or `..`.
/// It names a directory under the runtime root, so anything that could walk out of it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerId {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &'static str| RuntimeError::InvalidId {
            id: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.len() > 1024 {
            return Err(invalid("it is longer than 1024 characters"));
        }
        if s == "." || s == ".." {
            return Err(invalid("it names a directory"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
        {
            return Err(invalid("only letters, digits and _ + - . are allowed"));
        }
        Ok(ContainerId(s.to_owned()))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_runc_ids() {
        for id in ["a", "abc-123_x.y+z", "0123456789abcdef"] {
            assert_eq!(id.parse::<ContainerId>().unwrap().as_str(), id);
        }
    }

    #[test]
    fn refuses_ids_that_escape_or_are_odd() {
        for id in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            "x\0",
            &"x".repeat(1025),
        ] {
            assert!(id.parse::<ContainerId>().is_err(), "{id:?} was accepted");
        }
    }
}
