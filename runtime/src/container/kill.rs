//! `kill`: signal the init, or with `--all` every process of the container's cgroup.

use nix::sys::signal::{kill as send, Signal};

use super::state::Container;
use super::ContainerStatus;
use crate::error::{Result, RuntimeError};

/// Parses `KILL`, `SIGKILL`, `sigkill` or `9`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || RuntimeError::InvalidSpec {
        field: "signal",
        reason: format!("unknown signal {s:?}"),
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

pub fn kill(container: &Container, signal: Signal, all: bool) -> Result<()> {
    container.require("kill", ContainerStatus::can_kill)?;
    if all {
        container.cgroup()?.kill_all(signal)?;
        return Ok(());
    }
    send(container.pid(), signal)
        .map_err(|e| RuntimeError::sys(format!("kill {} with {signal}", container.pid()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
