//! `kill`: signal the init, or with `--all` every process of the container's cgroup.

use nix::sys::signal::{kill as send, Signal};

use super::state::Container;
use super::ContainerStatus;
use crate::error::{Result, RuntimeError};

/// Parses `KILL`, `SIGKILL`, `sigkill` or `9`; `0` is None (only checks that the init
/// exists, as `runc kill <id> 0` does — podman relies on it).
pub fn parse_signal(s: &str) -> Result<Option<Signal>> {
    let bad = || RuntimeError::InvalidSpec {
        field: "signal",
        reason: format!("unknown signal {s:?}"),
    };
    if let Ok(n) = s.parse::<i32>() {
        if n == 0 {
            return Ok(None);
        }
        return Signal::try_from(n).map(Some).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map(Some).map_err(|_| bad())
}

/// Sends `signal` (None: no signal, an existence check) to the init or, with `all`, to every
/// process of the container.
pub fn kill(container: &Container, signal: Option<Signal>, all: bool) -> Result<()> {
    container
        .require("kill", ContainerStatus::can_kill)
        .map_err(|e| match e {
            RuntimeError::WrongStatus {
                id,
                status: ContainerStatus::Stopped,
                ..
            } => RuntimeError::NotRunning { id, op: "kill" },
            e => e,
        })?;
    if let (Some(signal), true) = (signal, all) {
        container.cgroup()?.kill_all(signal)?;
        return Ok(());
    }
    send(container.pid(), signal)
        .map_err(|e| RuntimeError::sys(format!("kill {} with {signal:?}", container.pid()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm").unwrap(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("9").unwrap(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("0").unwrap(), None);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
