//! `CpuUsage.usage_nano_cores`: the CPU a pod or container used per second of wall time
//! between two of its stats samples (the kubelet's summary API reads it, as from containerd
//! and cAdvisor). The first sample of an ID has no rate.

use std::collections::HashMap;
use std::sync::Mutex;

/// The last CPU usage seen per ID.
#[derive(Debug, Default)]
pub(crate) struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    /// Records `(now, usage)` (nanoseconds since the epoch, cumulative CPU nanoseconds) and
    /// returns the rate since the previous sample, in nanocores; none for a first sample, a
    /// clock that did not move forward or a usage that went down (a new cgroup).
    pub(crate) fn rate(&self, id: &str, now: i64, usage: u64) -> Option<u64> {
        let mut samples = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let prev = samples.insert(id.to_owned(), (now, usage));
        let (then, before) = prev?;
        let dt = now.checked_sub(then).filter(|d| *d > 0)?;
        let used = usage.checked_sub(before)?;
        u64::try_from(u128::from(used) * 1_000_000_000 / dt as u128).ok()
    }

    /// Drops an ID's sample (it was removed).
    pub(crate) fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_between_samples() {
        let s = CpuSamples::default();
        assert_eq!(s.rate("a", 1_000_000_000, 5_000), None, "first sample");
        // 1 s of CPU in 2 s of wall time: half a core.
        assert_eq!(s.rate("a", 3_000_000_000, 1_000_005_000), Some(500_000_000));
        assert_eq!(
            s.rate("a", 3_000_000_000, 600_000_000),
            None,
            "no time passed"
        );
        assert_eq!(s.rate("a", 4_000_000_000, 1), None, "usage went down");
        assert_eq!(s.rate("b", 4_000_000_000, 1), None, "IDs apart");
        s.forget("a");
        assert_eq!(s.rate("a", 5_000_000_000, 10), None, "forgotten");
    }
}
