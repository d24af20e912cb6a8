//! What cAdvisor reads from /proc about a cgroup's processes: their open descriptors and
//! sockets (`/proc/<pid>/fd`), and the soft limits of the container's root process
//! (`/proc/<pid>/limits`).

use std::fs;
use std::path::Path;

/// Open descriptors of a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Descriptors {
    /// Entries of `/proc/<pid>/fd`, summed.
    pub(super) files: u64,
    /// Those that are sockets (`socket:[inode]`).
    pub(super) sockets: u64,
}

/// Counts the descriptors of `pids` under `proc` (the host's /proc, or a fake tree). A process
/// that has exited since its cgroup was read counts nothing.
pub(super) fn descriptors(proc: &Path, pids: &[i32]) -> Descriptors {
    let mut out = Descriptors::default();
    for pid in pids {
        let dir = proc.join(pid.to_string()).join("fd");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(pid, error = %e, "no descriptors to count");
                continue;
            }
        };
        for entry in entries.flatten() {
            out.files += 1;
            if fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            {
                out.sockets += 1;
            }
        }
    }
    out
}

/// The container's root process among `pids`: the one that is pid 1 in its own pid
/// namespace (the last field of `NSpid` in `/proc/<pid>/status`), else the oldest (lowest) pid.
pub(super) fn root_pid(proc: &Path, pids: &[i32]) -> Option<i32> {
    pids.iter()
        .copied()
        .find(|pid| {
            fs::read_to_string(proc.join(pid.to_string()).join("status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("NSpid:"))
                        .and_then(|ids| ids.split_whitespace().last().map(|id| id == "1"))
                })
                .unwrap_or(false)
        })
        .or_else(|| pids.iter().copied().min())
}

/// The soft limits cAdvisor reports (`max_open_files`) of process `pid`, by cAdvisor's names.
/// Unlimited values are left out: the CRI carries unsigned values, and cAdvisor's -1 for
/// "unlimited" has no place in them.
pub(super) fn soft_limits(proc: &Path, pid: i32) -> Vec<(&'static str, u64)> {
    let Ok(text) = fs::read_to_string(proc.join(pid.to_string()).join("limits")) else {
        return Vec::new();
    };
    parse_soft_limits(&text)
}

fn parse_soft_limits(text: &str) -> Vec<(&'static str, u64)> {
    const NAMES: [(&str, &str); 1] = [("Max open files", "max_open_files")];
    let mut out = Vec::new();
    for line in text.lines() {
        for (prefix, name) in NAMES {
            let soft = line
                .strip_prefix(prefix)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(soft) = soft {
                out.push((name, soft));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_file() {
        let text =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 20000                files     \n";
        assert_eq!(parse_soft_limits(text), vec![("max_open_files", 1024)]);
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_soft_limits(unlimited), vec![]);
    }
}
