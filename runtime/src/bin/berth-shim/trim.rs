//! Keeping the monitor small: once the container is created, the shim runs only its wait
//! loop, the output pumps and the control socket, a small part of what its start-up touched
//! (argument parsing, the bundle's spec, the runtime's command line). [`after_start_up`] gives
//! back what start-up left resident:
//!
//! - the pages of read-only file mappings (the binary's code and read-only data): they stay in
//!   the page cache (shared by every shim) and fault back in when used. Only private,
//!   non-writable file mappings, and in them only pages that are the file's own: a page that
//!   was copied on write (the few pointers of the static binary's GOT written at start-up,
//!   before they were made read-only; a debugger's breakpoint) is anonymous memory that
//!   MADV_DONTNEED would throw away, so such pages, found in /proc/self/pagemap, are kept,
//!   and so are swapped-out ones. On recent kernels (6.18 here) a fault on a file mapping
//!   maps the whole large page-cache folio it falls in (up to the end of the mapping), so
//!   these mappings are also cut into small pieces ([`split`]);
//! - the main thread's stack below the current frame, which start-up's deep calls touched;
//! - the free memory of malloc's heap (the spec, clap's and serde's temporaries).
//!
//! berth-shim is linked statically at a fixed address (runtime/build.rs): no ld.so, no shared
//! libraries, and read-only data that no loader relocates, so nearly all of it can go.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use berth_runtime::sys;

/// Bytes below the current frame left alone on the stack (far more than the madvise call
/// itself needs).
const STACK_MARGIN: usize = 16 << 10;
const PAGE: usize = 4096;
/// The size of the pieces read-only file mappings are cut into (see [`split`]).
const SPLIT: usize = 32 << 10;
/// At most this many ranges are dropped (a static binary has a handful of mappings).
const MAX_RANGES: usize = 64;

/// What [`after_start_up`] gave back, in bytes advised (not all were resident).
#[derive(Debug, Default)]
pub struct Trimmed {
    pub file: usize,
    pub stack: usize,
    pub heap_released: bool,
}

/// One mapping of /proc/self/smaps, the fields that decide whether it may be dropped.
#[derive(Debug, Default, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    path: String,
    rss_kib: u64,
    anonymous_kib: u64,
    swap_kib: u64,
}

impl Mapping {
    /// A private, non-writable file mapping with resident pages.
    fn is_read_only_file(&self) -> bool {
        let p = self.perms.as_bytes();
        self.path.starts_with('/')
            && p.len() == 4
            && p[1] == b'-'
            && p[3] == b'p'
            && self.rss_kib > 0
    }

    /// None of its pages is a private copy (anonymous) or swapped out.
    fn all_file_pages(&self) -> bool {
        self.anonymous_kib == 0 && self.swap_kib == 0
    }
}

fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                maps.push(Mapping {
                    start,
                    end,
                    perms: fields.next().unwrap_or("").to_owned(),
                    path: fields.nth(3).unwrap_or("").to_owned(),
                    ..Mapping::default()
                });
                continue;
            }
        }
        let (Some(m), Some(value)) = (maps.last_mut(), fields.next()) else {
            continue;
        };
        let kib = value.parse().unwrap_or(0);
        match first {
            "Rss:" => m.rss_kib = kib,
            "Anonymous:" => m.anonymous_kib = kib,
            "Swap:" => m.swap_kib = kib,
            _ => {}
        }
    }
    maps
}

/// The page-aligned runs of `start..end` without anonymous or swapped pages, from
/// /proc/self/pagemap (one u64 per page: bit 63 present, 62 swapped, 61 file page). None if
/// pagemap cannot be read: then nothing of the mapping is dropped.
fn file_page_runs(pagemap: &File, start: usize, end: usize) -> Option<Vec<(usize, usize)>> {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE: u64 = 1 << 61;
    let pages = (end - start) / PAGE;
    let mut raw = vec![0u8; pages * 8];
    pagemap
        .read_exact_at(&mut raw, (start / PAGE * 8) as u64)
        .ok()?;
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, entry) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
        let keep = e & SWAPPED != 0 || (e & PRESENT != 0 && e & FILE == 0);
        if keep {
            continue;
        }
        let page = start + i * PAGE;
        match runs.last_mut() {
            Some((_, run_end)) if *run_end == page => *run_end += PAGE,
            _ => runs.push((page, page + PAGE)),
        }
    }
    Some(runs)
}

/// What may be dropped: whole mappings, or their runs of file pages.
fn droppable(maps: &[Mapping]) -> Vec<(usize, usize)> {
    let pagemap = File::open("/proc/self/pagemap").ok();
    let mut ranges = Vec::new();
    for m in maps.iter().filter(|m| m.is_read_only_file()) {
        if m.all_file_pages() {
            ranges.push((m.start, m.end));
        } else if let Some(runs) = pagemap
            .as_ref()
            .and_then(|p| file_page_runs(p, m.start, m.end))
        {
            ranges.extend(runs);
        }
    }
    ranges
}

/// Gives back the memory start-up left resident (see the module's doc). Call it from the main
/// thread, at a shallow frame, once the container runs.
pub fn after_start_up() -> Trimmed {
    // The ranges live on the stack: once the code is dropped, nothing is allocated or freed
    // (malloc's code would fault back in) before the shim blocks waiting for the container.
    let mut ranges = [(0usize, 0usize); MAX_RANGES];
    let mut count = 0;
    let mut stack_low = None;
    if let Ok(text) = fs::read_to_string("/proc/self/smaps") {
        let maps = parse_smaps(&text);
        stack_low = maps.iter().find(|m| m.path == "[stack]").map(|m| m.start);
        for (slot, range) in ranges.iter_mut().zip(droppable(&maps)) {
            *slot = range;
            count += 1;
        }
    }
    let mut trimmed = Trimmed {
        // The smaps text and what was parsed from it are freed by now.
        heap_released: sys::malloc_trim(),
        ..Trimmed::default()
    };
    if let Some(low) = stack_low {
        trimmed.stack = sys::drop_stack_below(low, STACK_MARGIN).unwrap_or(0);
    }
    for &(start, end) in &ranges[..count] {
        split(start, end);
        if sys::drop_clean_file_mapping(start, end).is_ok() {
            trimmed.file += end - start;
        }
    }
    trimmed
}

/// Cuts `start..end` into mappings of [`SPLIT`] bytes (every other piece flagged
/// MADV_NOHUGEPAGE, so that neighbours do not merge back): a fault then maps at most that much
/// of a large page-cache folio. Unsplit, touching one instruction after the trim mapped up to
/// the whole folio, hundreds of KiB of code the shim does not run. The cost is kernel memory for
/// the extra mappings (a few hundred bytes each, about a hundred for berth-shim's 4 MiB).
fn split(start: usize, end: usize) {
    let mut piece = start;
    while piece < end {
        let _ = sys::no_huge_pages(piece, (piece + SPLIT).min(end));
        piece += 2 * SPLIT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
00400000-00500000 r-xp 00000000 fe:00 12 /usr/bin/berth-shim
Rss:                 512 kB
Anonymous:             0 kB
00600000-00610000 r--p 00200000 fe:00 12 /usr/bin/berth-shim
Rss:                  16 kB
Anonymous:             8 kB
00610000-00612000 rw-p 00210000 fe:00 12 /usr/bin/berth-shim
Rss:                   8 kB
Anonymous:             8 kB
00700000-00710000 r--p 00000000 fe:00 13 /usr/lib/locale/C.utf8/LC_CTYPE
Rss:                   0 kB
Anonymous:             0 kB
00800000-00810000 r--s 00000000 fe:00 14 /dev/shm/x
Rss:                   8 kB
Anonymous:             0 kB
7ffc0000-7ffe0000 rw-p 00000000 00:00 0                          [stack]
Rss:                  56 kB
Anonymous:            56 kB
Swap:                  0 kB
";

    #[test]
    fn parses_mappings_and_their_fields() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 6);
        assert_eq!(
            maps[1],
            Mapping {
                start: 0x600000,
                end: 0x610000,
                perms: "r--p".into(),
                path: "/usr/bin/berth-shim".into(),
                rss_kib: 16,
                anonymous_kib: 8,
                swap_kib: 0,
            }
        );
        assert_eq!(maps[5].path, "[stack]");
        assert_eq!(maps[5].start, 0x7ffc0000);
    }

    #[test]
    fn only_private_read_only_file_mappings_are_candidates() {
        let maps = parse_smaps(SMAPS);
        let candidates: Vec<bool> = maps.iter().map(Mapping::is_read_only_file).collect();
        // code: yes; relocated read-only data: yes (page by page); writable data: no;
        // nothing resident: no; shared: no; stack: no.
        assert_eq!(candidates, [true, true, false, false, false, false]);
        assert!(maps[0].all_file_pages());
        assert!(!maps[1].all_file_pages());
    }

    #[test]
    fn pagemap_keeps_anonymous_and_swapped_pages() {
        // Five pages: file, anonymous, not present, swapped, file.
        let entries: [u64; 5] = [1 << 63 | 1 << 61, 1 << 63, 0, 1 << 62, 1 << 63 | 1 << 61];
        let f = tempfile::tempfile().unwrap();
        let start = 0x40_0000;
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_ne_bytes()).collect();
        f.write_all_at(&bytes, (start / PAGE * 8) as u64).unwrap();
        let runs = file_page_runs(&f, start, start + 5 * PAGE).unwrap();
        assert_eq!(
            runs,
            [
                (start, start + PAGE),
                (start + 2 * PAGE, start + 3 * PAGE),
                (start + 4 * PAGE, start + 5 * PAGE)
            ]
        );
    }

    #[test]
    fn pagemap_of_this_process_is_readable() {
        // A written heap page is anonymous: never dropped.
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let heap = Box::new([1u8; PAGE * 2]);
        let addr = (heap.as_ptr() as usize + PAGE - 1) & !(PAGE - 1);
        let runs = file_page_runs(&pagemap, addr, addr + PAGE).unwrap();
        assert!(runs.is_empty(), "a written heap page is kept: {runs:?}");
    }
}
