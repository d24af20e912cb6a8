//! v1 freezer: freezer.state FROZEN / THAWED, waiting (bounded) for the transition.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{cgroupfs, CgroupError, FreezerState};

const FILE: &str = "freezer.state";
const TIMEOUT: Duration = Duration::from_secs(5);
/// A freeze racing with forks can stall in FREEZING; thaw and re-freeze at this interval.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The current state.
pub(super) fn state(dir: &Path) -> Result<FreezerState, CgroupError> {
    let path = dir.join(FILE);
    let s = cgroupfs::read(&path)?;
    match s.trim() {
        "THAWED" => Ok(FreezerState::Thawed),
        "FREEZING" => Ok(FreezerState::Freezing),
        "FROZEN" => Ok(FreezerState::Frozen),
        other => Err(CgroupError::Parse {
            path,
            content: other.to_owned(),
            reason: "expected THAWED, FREEZING or FROZEN",
        }),
    }
}

/// Freezes and waits for FROZEN; on timeout thaws again and fails.
pub(super) fn freeze(dir: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut last_write = start;
    cgroupfs::write(dir, FILE, "FROZEN")?;
    let mut delay = Duration::from_micros(200);
    loop {
        let st = state(dir)?;
        if st == FreezerState::Frozen {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            let _ = cgroupfs::write(dir, FILE, "THAWED");
            return Err(CgroupError::FreezeTimeout {
                path: dir.to_owned(),
                wanted: "FROZEN",
                last: format!("{st:?}"),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        if last_write.elapsed() > RETRY_EVERY {
            cgroupfs::write(dir, FILE, "THAWED")?;
            std::thread::sleep(Duration::from_millis(10));
            cgroupfs::write(dir, FILE, "FROZEN")?;
            last_write = Instant::now();
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

/// Thaws and waits for THAWED.
pub(super) fn thaw(dir: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    cgroupfs::write(dir, FILE, "THAWED")?;
    loop {
        let st = state(dir)?;
        if st == FreezerState::Thawed {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            return Err(CgroupError::FreezeTimeout {
                path: dir.to_owned(),
                wanted: "THAWED",
                last: format!("{st:?}"),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
        cgroupfs::write(dir, FILE, "THAWED")?;
    }
}
