//! hugetlb on v1 (hugetlb.<size>.limit_in_bytes) or, on hybrid hosts where the hugetlb
//! controller sits on cgroup2, in the cgroup2 directory (hugetlb.<size>.max).

use std::path::Path;

use oci_spec::runtime::LinuxHugepageLimit;

use crate::stats::HugetlbStats;
use crate::v2::resources::{enable_controllers, hugetlb_writes, page_sizes};
use crate::{cgroupfs, CgroupError};

fn check_size(size: &str) -> Result<(), CgroupError> {
    if size.is_empty() || size.contains('/') || size.contains('.') {
        return Err(CgroupError::InvalidResource {
            what: "hugepageLimits.pageSize",
            reason: format!("{size:?} is not a page size like \"2MB\""),
        });
    }
    Ok(())
}

/// Writes hugetlb.<size>.limit_in_bytes (and .rsvd.limit_in_bytes where the kernel has it).
pub(super) fn apply(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<(), CgroupError> {
    for l in limits {
        let size = l.page_size();
        check_size(size)?;
        let file = format!("hugetlb.{size}.limit_in_bytes");
        if !cgroupfs::exists(dir, &file) {
            return Err(CgroupError::UnsupportedResource {
                controller: "hugetlb",
                what: format!("page size {size}: {} is missing", dir.join(&file).display()),
            });
        }
        let value = l.limit().to_string();
        cgroupfs::write(dir, &file, &value)?;
        let rsvd = format!("hugetlb.{size}.rsvd.limit_in_bytes");
        if cgroupfs::exists(dir, &rsvd) {
            cgroupfs::write(dir, &rsvd, &value)?;
        }
    }
    Ok(())
}

/// Hybrid host with hugetlb on cgroup2: enables it down to `dir` and writes hugetlb.<size>.max.
pub(super) fn apply_unified(
    mount_point: &Path,
    dir: &Path,
    limits: &[LinuxHugepageLimit],
) -> Result<(), CgroupError> {
    let available = cgroupfs::read(&mount_point.join("cgroup.controllers"))?;
    if !available.split_whitespace().any(|c| c == "hugetlb") {
        return Err(CgroupError::UnsupportedResource {
            controller: "hugetlb",
            what:
                "huge page limits: hugetlb is neither mounted on cgroup v1 nor available on cgroup2"
                    .into(),
        });
    }
    enable_controllers(mount_point, dir, &["hugetlb"])?;
    for (file, value) in hugetlb_writes(limits, |f| cgroupfs::exists(dir, f))? {
        cgroupfs::write(dir, &file, &value)?;
    }
    Ok(())
}

/// Usage per page size.
pub(super) fn stats(dir: &Path) -> Result<Vec<HugetlbStats>, CgroupError> {
    let mut out = Vec::new();
    for size in page_sizes(dir, ".limit_in_bytes")? {
        out.push(HugetlbStats {
            usage: cgroupfs::read_u64(dir, &format!("hugetlb.{size}.usage_in_bytes"))?,
            max_usage: cgroupfs::read_u64_opt(dir, &format!("hugetlb.{size}.max_usage_in_bytes"))?,
            failcnt: cgroupfs::read_u64_opt(dir, &format!("hugetlb.{size}.failcnt"))?.unwrap_or(0),
            page_size: size,
        });
    }
    Ok(out)
}
