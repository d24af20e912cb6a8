//! Device access rules, normalized from the OCI `linux.resources.devices` entries. v1 writes them
//! to devices.allow / devices.deny ("c 1:3 rwm"); v2 compiles them to an eBPF device filter.

use std::fmt;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::CgroupError;

/// The kind of device a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Every kind ("a").
    All,
    /// Character devices ("c", also OCI's "u").
    Char,
    /// Block devices ("b").
    Block,
}

/// Access bits of a rule: read, write, mknod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAccess {
    /// 'r'
    pub read: bool,
    /// 'w'
    pub write: bool,
    /// 'm'
    pub mknod: bool,
}

impl DeviceAccess {
    /// "rwm".
    pub const ALL: Self = Self {
        read: true,
        write: true,
        mknod: true,
    };

    fn parse(s: &str) -> Option<Self> {
        if s.is_empty() {
            return Some(Self::ALL);
        }
        let mut a = Self {
            read: false,
            write: false,
            mknod: false,
        };
        for c in s.chars() {
            match c {
                'r' => a.read = true,
                'w' => a.write = true,
                'm' => a.mknod = true,
                _ => return None,
            }
        }
        Some(a)
    }

    /// True for "rwm".
    pub fn is_all(self) -> bool {
        self == Self::ALL
    }
}

impl fmt::Display for DeviceAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, c) in [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One allow or deny rule; `None` major/minor is the wildcard "*".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny (false).
    pub allow: bool,
    /// Device kind.
    pub kind: DeviceKind,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// Access covered.
    pub access: DeviceAccess,
}

impl DeviceRule {
    /// Normalizes an OCI rule. Returns `None` for FIFO rules ("p"), which the device cgroup
    /// does not control (runc skips them too). A missing type means "a", a missing or -1
    /// major/minor means "*", a missing or empty access means "rwm".
    pub fn from_oci(rule: &LinuxDeviceCgroup) -> Result<Option<Self>, CgroupError> {
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => {
                tracing::debug!(rule = %rule, "skipping FIFO device rule: not controlled by the devices cgroup");
                return Ok(None);
            }
        };
        let number = |n: Option<i64>| -> Result<Option<u32>, CgroupError> {
            match n {
                None | Some(-1) => Ok(None),
                Some(v) => u32::try_from(v)
                    .map(Some)
                    .map_err(|_| CgroupError::InvalidDeviceRule {
                        rule: rule.to_string(),
                        reason: "device number out of range",
                    }),
            }
        };
        let access =
            DeviceAccess::parse(rule.access().as_deref().unwrap_or("")).ok_or_else(|| {
                CgroupError::InvalidDeviceRule {
                    rule: rule.to_string(),
                    reason: "access must be made of 'r', 'w' and 'm'",
                }
            })?;
        Ok(Some(Self {
            allow: rule.allow(),
            kind,
            major: number(rule.major())?,
            minor: number(rule.minor())?,
            access,
        }))
    }

    /// Normalizes a list of OCI rules, dropping FIFO rules.
    pub fn from_oci_list(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Self>, CgroupError> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            if let Some(r) = Self::from_oci(r)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// The v1 devices.allow / devices.deny syntax: "c 1:3 rwm", "a *:* rwm".
impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |v| v.to_string());
        write!(
            f,
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn formats_like_v1() {
        let r = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(
            DeviceRule::from_oci(&r).unwrap().unwrap().to_string(),
            "c 1:3 rwm"
        );
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(
            DeviceRule::from_oci(&deny_all)
                .unwrap()
                .unwrap()
                .to_string(),
            "a *:* rwm"
        );
        let wild_minor = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::U)
            .major(136)
            .minor(-1)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(
            DeviceRule::from_oci(&wild_minor)
                .unwrap()
                .unwrap()
                .to_string(),
            "c 136:* rw"
        );
        let no_access = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .major(8)
            .minor(0)
            .build()
            .unwrap();
        assert_eq!(
            DeviceRule::from_oci(&no_access)
                .unwrap()
                .unwrap()
                .to_string(),
            "b 8:0 rwm"
        );
    }

    #[test]
    fn rejects_bad_rules_and_skips_fifos() {
        let bad_access = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwx")
            .build()
            .unwrap();
        assert!(DeviceRule::from_oci(&bad_access).is_err());
        let bad_major = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(-5)
            .build()
            .unwrap();
        assert!(DeviceRule::from_oci(&bad_major).is_err());
        let fifo = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::P)
            .build()
            .unwrap();
        assert_eq!(DeviceRule::from_oci(&fifo).unwrap(), None);
        assert!(DeviceRule::from_oci_list(&[fifo, bad_access.clone()]).is_err());
    }
}
