//! OCI `linux.resources` → the properties of a systemd unit, as runc's systemd driver maps them.
//!
//! systemd owns the limits it knows: when it (re)realizes a unit — at start, on
//! `SetUnitProperties`, on `daemon-reload` — it writes every one of its controller files from the
//! unit's properties, `max` for the ones not set. So each limit systemd can express goes into the
//! unit's properties, or the next reload undoes it; the rest (hugetlb, rdma, cpu.idle, burst,
//! io.max, the device filter…) is written to the unit's cgroup directly afterwards, which
//! `Delegate=yes` allows.
//!
//! The mapping starts from the cgroup v2 file plan ([`crate::v2::resources::plan`]), so that the
//! unified map (`memory.high`, `memory.swap.max` from the kubelet…) and the v1→v2 conversions
//! (shares → weight, memory+swap → swap) are done once, the same way for both drivers.

use crate::v2::resources::FileWrite;
use crate::CgroupError;

/// A property value, as systemd's D-Bus API types it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// `t`: a number; `u64::MAX` is systemd's "infinity".
    U64(u64),
    /// `ay`: a CPU or NUMA node bitmask, byte 0 holding bits 0-7.
    Bytes(Vec<u8>),
    /// `s`.
    Str(&'static str),
}

/// The first systemd version taking `OOMPolicy` for a scope. Older ones reset memory.oom.group
/// to 0 whenever they realize the unit (a reload), whatever berth wrote.
pub const OOM_POLICY_SINCE: u32 = 253;

/// One unit property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// systemd's name (`MemoryMax`, `CPUWeight`…).
    pub name: &'static str,
    /// Its value.
    pub value: PropertyValue,
}

/// The properties expressing `writes` (the v2 file plan of the resources). Writes systemd has
/// no property for are left out: they are written to the files after the unit started. The
/// period of `cpu.max` is `CPUQuotaPeriodUSec`; the quota becomes `CPUQuotaPerSecUSec` rounded
/// up to 10 ms (systemd's granularity, as runc does).
pub fn from_writes(writes: &[FileWrite]) -> Result<Vec<Property>, CgroupError> {
    let mut out: Vec<Property> = Vec::new();
    let mut set = |name: &'static str, value: PropertyValue| {
        // The unified map comes after the typed fields in the plan, and wins, as in the files.
        out.retain(|p| p.name != name);
        out.push(Property { name, value });
    };
    for w in writes {
        let value = w.value.trim();
        match w.file.as_str() {
            "cpu.weight" => set("CPUWeight", PropertyValue::U64(number(w, value)?)),
            "cpu.max" => {
                let mut fields = value.split_whitespace();
                let quota = fields.next().unwrap_or("max");
                let period = match fields.next() {
                    Some(p) => number(w, p)?,
                    None => 100_000,
                };
                if period == 0 {
                    return Err(bad(w, "the period is 0"));
                }
                let per_sec = match quota {
                    "max" => u64::MAX,
                    q => {
                        let q = number(w, q)?;
                        let us = q.saturating_mul(1_000_000) / period;
                        us.div_ceil(10_000).saturating_mul(10_000)
                    }
                };
                set("CPUQuotaPerSecUSec", PropertyValue::U64(per_sec));
                if fields_had_period(value) {
                    set("CPUQuotaPeriodUSec", PropertyValue::U64(period));
                }
            }
            "cpuset.cpus" => set("AllowedCPUs", PropertyValue::Bytes(bitmask(w, value)?)),
            "cpuset.mems" => set(
                "AllowedMemoryNodes",
                PropertyValue::Bytes(bitmask(w, value)?),
            ),
            "memory.max" => set("MemoryMax", limit(w, value)?),
            "memory.high" => set("MemoryHigh", limit(w, value)?),
            "memory.low" => set("MemoryLow", limit(w, value)?),
            "memory.min" => set("MemoryMin", limit(w, value)?),
            "memory.swap.max" => set("MemorySwapMax", limit(w, value)?),
            "pids.max" => set("TasksMax", limit(w, value)?),
            // systemd writes memory.oom.group from the unit's OOMPolicy (kill: 1); scopes take
            // OOMPolicy from systemd 253 on (see [`OOM_POLICY_SINCE`]).
            "memory.oom.group" => set(
                "OOMPolicy",
                PropertyValue::Str(if value == "1" { "kill" } else { "continue" }),
            ),
            "io.weight" => {
                // "default N" or "N"; per-device weights ("8:0 N") stay in the file.
                let n = value.strip_prefix("default ").unwrap_or(value);
                if !n.contains(':') {
                    set("IOWeight", PropertyValue::U64(number(w, n)?));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn fields_had_period(value: &str) -> bool {
    value.split_whitespace().count() > 1
}

fn bad(w: &FileWrite, reason: &str) -> CgroupError {
    CgroupError::InvalidResource {
        what: w.controller,
        reason: format!("{} = {:?}: {reason}", w.file, w.value),
    }
}

fn number(w: &FileWrite, s: &str) -> Result<u64, CgroupError> {
    s.parse().map_err(|_| bad(w, "not a number"))
}

/// `max` → infinity, else bytes/count.
fn limit(w: &FileWrite, s: &str) -> Result<PropertyValue, CgroupError> {
    Ok(PropertyValue::U64(match s {
        "max" => u64::MAX,
        s => number(w, s)?,
    }))
}

/// A cpuset list (`0-3,8`) as systemd's bitmask: bit `n % 8` of byte `n / 8` for each `n`.
fn bitmask(w: &FileWrite, list: &str) -> Result<Vec<u8>, CgroupError> {
    // The kernel's own bound on CPU numbers (NR_CPUS is at most 8192).
    const MAX: u32 = 8192;
    let mut bytes = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: u32 = lo.parse().map_err(|_| bad(w, "not a cpu list"))?;
        let hi: u32 = hi.parse().map_err(|_| bad(w, "not a cpu list"))?;
        if lo > hi || hi >= MAX {
            return Err(bad(w, "not a cpu list"));
        }
        for n in lo..=hi {
            let i = (n / 8) as usize;
            if bytes.len() <= i {
                bytes.resize(i + 1, 0);
            }
            bytes[i] |= 1 << (n % 8);
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::resources::plan;
    use oci_spec::runtime::LinuxResources;

    fn props(json: &str) -> Vec<Property> {
        let r: LinuxResources = serde_json::from_str(json).unwrap();
        from_writes(&plan(&r, |_| true).unwrap()).unwrap()
    }

    fn get(p: &[Property], name: &str) -> Option<PropertyValue> {
        p.iter().find(|p| p.name == name).map(|p| p.value.clone())
    }

    #[test]
    fn kubelet_resources() {
        let p = props(
            r#"{"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1,9"},
                "memory": {"limit": 134217728, "swap": 134217728},
                "pids": {"limit": 100},
                "unified": {"memory.high": "100663296", "memory.swap.max": "0"}}"#,
        );
        assert_eq!(get(&p, "CPUWeight"), Some(PropertyValue::U64(39)));
        assert_eq!(
            get(&p, "CPUQuotaPerSecUSec"),
            Some(PropertyValue::U64(500_000))
        );
        assert_eq!(
            get(&p, "CPUQuotaPeriodUSec"),
            Some(PropertyValue::U64(100_000))
        );
        assert_eq!(
            get(&p, "AllowedCPUs"),
            Some(PropertyValue::Bytes(vec![0b11, 0b10]))
        );
        assert_eq!(get(&p, "MemoryMax"), Some(PropertyValue::U64(134_217_728)));
        assert_eq!(get(&p, "MemoryHigh"), Some(PropertyValue::U64(100_663_296)));
        // The unified map wins over memory.swap (which said 0 bytes of swap too).
        assert_eq!(get(&p, "MemorySwapMax"), Some(PropertyValue::U64(0)));
        assert_eq!(get(&p, "TasksMax"), Some(PropertyValue::U64(100)));
        assert_eq!(
            p.iter().filter(|p| p.name == "MemorySwapMax").count(),
            1,
            "one property per name"
        );
    }

    #[test]
    fn unlimited_and_rounding() {
        let p =
            props(r#"{"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": 1234}}"#);
        assert_eq!(get(&p, "MemoryMax"), Some(PropertyValue::U64(u64::MAX)));
        assert_eq!(get(&p, "TasksMax"), Some(PropertyValue::U64(u64::MAX)));
        // 1234 µs per 100 ms = 12340 µs/s → 20 ms/s (10 ms steps, rounded up).
        assert_eq!(
            get(&p, "CPUQuotaPerSecUSec"),
            Some(PropertyValue::U64(20_000))
        );
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), None);
    }

    #[test]
    fn files_systemd_cannot_express_are_left_to_the_files() {
        let p = props(
            r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
                "unified": {"cpu.idle": "1", "memory.oom.group": "1"}}"#,
        );
        assert_eq!(
            p,
            [Property {
                name: "OOMPolicy",
                value: PropertyValue::Str("kill")
            }]
        );
    }

    #[test]
    fn bad_cpu_lists_are_refused() {
        for list in ["a", "3-1", "0-99999"] {
            let w = FileWrite {
                controller: "cpuset",
                file: "cpuset.cpus".into(),
                value: list.into(),
            };
            assert!(from_writes(&[w]).is_err(), "{list}");
        }
    }
}
