//! The bits of /proc the runtime reads about a process.

use std::fs;
use std::io;

use nix::unistd::Pid;

/// Fields of /proc/PID/stat the runtime needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// One-letter state (R, S, D, Z, X, T, …).
    pub state: char,
    /// Start time in clock ticks after boot (field 22).
    pub start_time: u64,
}

impl ProcStat {
    /// A zombie or dead process no longer runs the container.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub fn stat(pid: Pid) -> io::Result<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// Parses /proc/PID/stat. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> io::Result<ProcStat> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat");
    let rest = &line[line.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state); field 22 (starttime) is fields[19].
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(bad)?;
    let start_time = fields.get(19).ok_or_else(bad)?.parse().map_err(|_| bad())?;
    Ok(ProcStat { state, start_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.start_time, 987654);
        assert!(!st.is_dead());
    }

    #[test]
    fn reads_own_stat() {
        let st = stat(nix::unistd::getpid()).unwrap();
        assert!(st.start_time > 0);
        assert!(!st.is_dead());
    }
}
