//! What else runs on the machine while a benchmark runs: load average and busy compilers, so
//! that a reader can judge the numbers.

use std::fs;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct HostLoad {
    /// 1-, 5- and 15-minute load averages.
    pub loadavg: [f64; 3],
    pub cpus: usize,
    /// rustc/cargo/cc1/ld processes running, e.g. other people's builds.
    pub busy_builds: usize,
}

impl HostLoad {
    pub fn now() -> Self {
        let mut loadavg = [0.0; 3];
        if let Ok(s) = fs::read_to_string("/proc/loadavg") {
            for (slot, v) in loadavg.iter_mut().zip(s.split_whitespace()) {
                *slot = v.parse().unwrap_or(0.0);
            }
        }
        Self {
            loadavg,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            busy_builds: count_builds(),
        }
    }

    pub fn is_busy(&self) -> bool {
        self.busy_builds > 0 || self.loadavg[0] > 0.5 * self.cpus as f64
    }

    pub fn describe(&self) -> String {
        format!(
            "load average {:.2} {:.2} {:.2} on {} cpus, {} compiler/linker processes running{}",
            self.loadavg[0],
            self.loadavg[1],
            self.loadavg[2],
            self.cpus,
            self.busy_builds,
            if self.is_busy() {
                " (busy: treat the numbers with care)"
            } else {
                ""
            }
        )
    }
}

fn count_builds() -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
        .filter(|comm| {
            matches!(
                comm.trim(),
                "rustc" | "cargo" | "cc1" | "cc1plus" | "ld" | "ld.lld" | "collect2"
            )
        })
        .count()
}
