//! v1 blkio: weights (CFQ "blkio.weight" or BFQ "blkio.bfq.weight"), per-device weights and
//! throttling; I/O statistics.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

use crate::stats::{blkio_device, parse_dev, BlkioDeviceStats};
use crate::{cgroupfs, CgroupError};

/// True if `b` asks for anything.
pub(super) fn requested(b: &LinuxBlockIo) -> bool {
    let non_empty = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
    b.weight().is_some_and(|w| w != 0)
        || b.leaf_weight().is_some_and(|w| w != 0)
        || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
        || non_empty(b.throttle_read_bps_device())
        || non_empty(b.throttle_write_bps_device())
        || non_empty(b.throttle_read_iops_device())
        || non_empty(b.throttle_write_iops_device())
}

/// The weight file this kernel has: CFQ's blkio.weight or BFQ's blkio.bfq.weight.
fn weight_files(dir: &Path) -> Option<(&'static str, &'static str)> {
    if cgroupfs::exists(dir, "blkio.weight") {
        Some(("blkio.weight", "blkio.weight_device"))
    } else if cgroupfs::exists(dir, "blkio.bfq.weight") {
        Some(("blkio.bfq.weight", "blkio.bfq.weight_device"))
    } else {
        None
    }
}

fn no_weight(dir: &Path, what: String) -> CgroupError {
    CgroupError::UnsupportedResource {
        controller: "blkio",
        what: format!(
            "{what}: {} has neither blkio.weight nor blkio.bfq.weight (no CFQ/BFQ I/O scheduler)",
            dir.display()
        ),
    }
}

/// Writes the blkio files, in runc's order.
pub(super) fn apply(dir: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    if let Some(weight) = b.weight().filter(|&w| w != 0) {
        let (file, _) =
            weight_files(dir).ok_or_else(|| no_weight(dir, format!("weight {weight}")))?;
        cgroupfs::write(dir, file, &weight.to_string())?;
    }
    if let Some(leaf) = b.leaf_weight().filter(|&w| w != 0) {
        cgroupfs::write(dir, "blkio.leaf_weight", &leaf.to_string())?;
    }
    for wd in b.weight_device().iter().flatten() {
        let dev = format!("{}:{}", wd.major(), wd.minor());
        if let Some(w) = wd.weight().filter(|&w| w != 0) {
            let (_, file) =
                weight_files(dir).ok_or_else(|| no_weight(dir, format!("weight {dev} {w}")))?;
            cgroupfs::write(dir, file, &format!("{dev} {w}"))?;
        }
        if let Some(w) = wd.leaf_weight().filter(|&w| w != 0) {
            cgroupfs::write(dir, "blkio.leaf_weight_device", &format!("{dev} {w}"))?;
        }
    }
    let throttles: [(&Option<Vec<LinuxThrottleDevice>>, &str); 4] = [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
        ),
    ];
    for (devices, file) in throttles {
        for td in devices.iter().flatten() {
            cgroupfs::write(
                dir,
                file,
                &format!("{}:{} {}", td.major(), td.minor(), td.rate()),
            )?;
        }
    }
    Ok(())
}

/// Bytes and operations per device, from the throttle counters (which count every I/O), or
/// from BFQ's when the throttle ones are empty.
pub(super) fn stats(dir: &Path) -> Result<Vec<BlkioDeviceStats>, CgroupError> {
    for prefix in ["blkio.throttle.", "blkio.bfq.", "blkio."] {
        let mut devices = Vec::new();
        let bytes = read_recursive(dir, prefix, "io_service_bytes")?;
        let ios = read_recursive(dir, prefix, "io_serviced")?;
        if bytes.is_none() && ios.is_none() {
            continue;
        }
        for (content, is_bytes) in [(bytes, true), (ios, false)] {
            parse_io_lines(content.as_deref().unwrap_or(""), is_bytes, &mut devices);
        }
        if !devices.is_empty() {
            return Ok(devices);
        }
    }
    Ok(Vec::new())
}

fn read_recursive(dir: &Path, prefix: &str, name: &str) -> Result<Option<String>, CgroupError> {
    match cgroupfs::read_opt(dir, &format!("{prefix}{name}_recursive"))? {
        Some(s) => Ok(Some(s)),
        None => cgroupfs::read_opt(dir, &format!("{prefix}{name}")),
    }
}

/// Parses "8:0 Read 4096" lines ("Total" lines and other operations are skipped).
fn parse_io_lines(content: &str, is_bytes: bool, devices: &mut Vec<BlkioDeviceStats>) {
    for line in content.lines() {
        let mut it = line.split_whitespace();
        let (Some(dev), Some(op), Some(value)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (Some((major, minor)), Ok(value)) = (parse_dev(dev), value.parse::<u64>()) else {
            continue;
        };
        let d = blkio_device(devices, major, minor);
        match (op, is_bytes) {
            ("Read", true) => d.read_bytes = value,
            ("Write", true) => d.write_bytes = value,
            ("Read", false) => d.read_ios = value,
            ("Write", false) => d.write_ios = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_lines() {
        let mut d = Vec::new();
        parse_io_lines(
            "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 1\n8:16 Read 1\nTotal 4609\n",
            true,
            &mut d,
        );
        parse_io_lines("8:0 Read 2\n8:0 Write 3\n", false, &mut d);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            BlkioDeviceStats {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 512,
                read_ios: 2,
                write_ios: 3
            }
        );
    }
}
