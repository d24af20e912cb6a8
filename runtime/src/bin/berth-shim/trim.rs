//! Keeping the monitor small: once the container is created, the shim runs only its wait
//! loop, the output pumps and the control socket, a small part of the code its start-up
//! touched (argument parsing, the bundle's spec, the runtime's command line). The pages of
//! code (read-only, executable, file-backed mappings) it touched stay resident and count in
//! its RSS; [`drop_code_pages`] lets the kernel drop them from this process (they stay in the
//! page cache; what is used again faults back in). Only `r-xp` file mappings are touched:
//! their pages are never dirty, so nothing is lost. Data mappings are left alone.

use std::fs;

/// Drops this process's resident code pages; returns the bytes advised.
pub fn drop_code_pages() -> usize {
    let Ok(maps) = fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        // A file path (not [vdso], [vsyscall] or anonymous).
        let path = fields.nth(3).unwrap_or("");
        if perms != "r-xp" || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        if berth_runtime::sys::drop_code_mapping(start, end).is_ok() {
            advised += end - start;
        }
    }
    advised
}
