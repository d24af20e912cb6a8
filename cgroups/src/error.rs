//! The error type of every cgroup operation. Each variant says what failed and names the file,
//! controller or value involved, so that a message read in a log is enough to act on.

use std::io;
use std::path::PathBuf;

/// What went wrong while managing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Writing a value to a cgroup file failed.
    #[error("write {value:?} to {path}: {source}")]
    Write {
        /// The cgroup file.
        path: PathBuf,
        /// The value that was written.
        value: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// Reading a cgroup file (or /proc file) failed.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// A cgroup file held something we could not parse.
    #[error("parse {path}: unexpected content {content:?}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The offending content (a line or a value).
        content: String,
        /// Why it is wrong.
        reason: &'static str,
    },

    /// Creating a cgroup directory failed.
    #[error("create cgroup {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// Removing a cgroup directory failed (after the bounded retries for EBUSY).
    #[error("remove cgroup {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The kernel's last answer.
        #[source]
        source: io::Error,
    },

    /// The OCI spec asked for a resource this host's cgroups cannot enforce.
    #[error("cgroup controller {controller}: cannot set {what}")]
    UnsupportedResource {
        /// The controller (e.g. "net_cls", "hugetlb", "cpu").
        controller: &'static str,
        /// What was requested and why it cannot be done.
        what: String,
    },

    /// A value of the OCI spec is out of range or inconsistent.
    #[error("invalid resource {what}: {reason}")]
    InvalidResource {
        /// The resource (e.g. "memory.swap").
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },

    /// An OCI cgroupsPath could not be turned into a cgroup path.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// Something that must exist does not (no cgroup mounts, no own cgroup for a controller...).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },

    /// Setting a memory limit failed because usage is already above it (EBUSY from the kernel).
    #[error("set memory limit {limit} in {path}: current usage {usage} is above it")]
    MemoryLimitBelowUsage {
        /// memory.limit_in_bytes.
        path: PathBuf,
        /// The requested limit.
        limit: i64,
        /// The cgroup's usage when the write failed.
        usage: u64,
    },

    /// The freezer did not reach the wanted state in time.
    #[error(
        "freezer in {path}: did not become {wanted} within {waited_ms} ms (last state {last})"
    )]
    FreezeTimeout {
        /// The freezer directory.
        path: PathBuf,
        /// "FROZEN" or "THAWED".
        wanted: &'static str,
        /// The last state read.
        last: String,
        /// How long we waited.
        waited_ms: u64,
    },

    /// Sending a signal to a process of the cgroup failed.
    #[error("signal {signal} to pid {pid}: {source}")]
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },

    /// A bpf(2) call for the v2 device filter failed.
    #[error("bpf {op} for device filter of {path}: {source}{log}")]
    Bpf {
        /// "prog load", "prog attach", "prog query", "prog detach".
        op: &'static str,
        /// The cgroup2 directory.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
        /// The verifier log (empty unless the load failed), prefixed with ": verifier log: ".
        log: String,
    },

    /// An OCI device rule cannot be expressed as a device filter.
    #[error("device rule {rule}: {reason}")]
    InvalidDeviceRule {
        /// The rule, as the v1 devices.allow syntax.
        rule: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A D-Bus call to systemd (the systemd cgroup driver) failed.
    #[error("systemd {op} of unit {unit}: {source}")]
    Systemd {
        /// The call: "connect", "StartTransientUnit", "StopUnit", "SetUnitProperties"...
        op: &'static str,
        /// The unit it was about ("" for the connection).
        unit: String,
        /// zbus's error (systemd's D-Bus error name and message for a refused call).
        #[source]
        source: Box<zbus::Error>,
    },

    /// A systemd job did not end as "done" (or did not end in time).
    #[error("systemd {op} of unit {unit}: job ended {result:?}")]
    SystemdJob {
        /// "start" or "stop".
        op: &'static str,
        /// The unit.
        unit: String,
        /// systemd's job result ("failed", "timeout", "canceled"...) or "no answer within N s".
        result: String,
    },
}

impl CgroupError {
    /// True if the error means "the file or directory does not exist".
    pub fn is_not_found(&self) -> bool {
        let io = match self {
            Self::Write { source, .. }
            | Self::Read { source, .. }
            | Self::Create { source, .. }
            | Self::Remove { source, .. } => source,
            Self::NotFound { .. } => return true,
            _ => return false,
        };
        io.kind() == io::ErrorKind::NotFound
    }
}
