//! Pressure stall information of a cgroup v2 directory: `cpu.pressure`, `memory.pressure`,
//! `io.pressure`, each "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and (but cpu.pressure
//! before kernel 5.13) a "full ..." line of the same shape. Files that are absent (no PSI in
//! the kernel) or unreadable (PSI disabled: EOPNOTSUPP) read as `None`, never as zero.

use std::path::Path;

use crate::stats::{PressureStats, Psi, PsiData};

/// The three pressure files of the cgroup directory `dir` (v2, or a hybrid host's unified side).
pub(crate) fn read(dir: &Path) -> PressureStats {
    PressureStats {
        cpu: read_file(dir, "cpu.pressure"),
        memory: read_file(dir, "memory.pressure"),
        io: read_file(dir, "io.pressure"),
    }
}

fn read_file(dir: &Path, file: &str) -> Option<Psi> {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(text) => parse(&text),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::trace!(file, dir = %dir.display(), error = %e, "no pressure");
            }
            None
        }
    }
}

/// Parses a pressure file; `None` without a well-formed "some" line.
pub(crate) fn parse(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        *slot = parse_line(fields);
    }
    Some(Psi { some: some?, full })
}

/// "avg10=.. avg60=.. avg300=.. total=..": every key must be there and parse.
fn parse_line<'a>(fields: impl Iterator<Item = &'a str>) -> Option<PsiData> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields {
        let (key, value) = field.split_once('=')?;
        match key {
            "avg10" => avg10 = Some(value.parse::<f64>().ok()?),
            "avg60" => avg60 = Some(value.parse::<f64>().ok()?),
            "avg300" => avg300 = Some(value.parse::<f64>().ok()?),
            "total" => total = Some(value.parse::<u64>().ok()?),
            _ => {}
        }
    }
    Some(PsiData {
        total_us: total?,
        avg10: avg10?,
        avg60: avg60?,
        avg300: avg300?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &str = "some avg10=4.57 avg60=6.76 avg300=15.00 total=4096357600\n\
                        full avg10=0.10 avg60=0.00 avg300=1.25 total=700\n";

    #[test]
    fn some_and_full_lines() {
        let p = parse(BOTH).unwrap();
        assert_eq!(
            p.some,
            PsiData {
                total_us: 4096357600,
                avg10: 4.57,
                avg60: 6.76,
                avg300: 15.0
            }
        );
        assert_eq!(
            p.full,
            Some(PsiData {
                total_us: 700,
                avg10: 0.1,
                avg60: 0.0,
                avg300: 1.25
            })
        );
    }

    #[test]
    fn cpu_pressure_of_old_kernels_has_no_full_line() {
        let p = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n").unwrap();
        assert_eq!(p.some.total_us, 9);
        assert_eq!(p.full, None);
    }

    #[test]
    fn malformed_or_empty_is_none() {
        assert_eq!(parse(""), None);
        assert_eq!(
            parse("full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"),
            None
        );
        assert_eq!(parse("some avg10=0.00 avg60=0.00 total=1\n"), None);
        assert_eq!(parse("some avg10=x avg60=0.00 avg300=0.00 total=1\n"), None);
        // A bad full line leaves full out, the some line stands.
        let p = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=3\nfull total=oops\n").unwrap();
        assert_eq!((p.some.total_us, p.full), (3, None));
    }

    #[test]
    fn files_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("io.pressure"), BOTH).unwrap();
        // A directory in place of a file: reading fails, as with EOPNOTSUPP.
        std::fs::create_dir(dir.path().join("memory.pressure")).unwrap();
        let p = read(dir.path());
        assert_eq!((&p.cpu, &p.memory), (&None, &None));
        assert_eq!(p.io.unwrap().full.map(|f| f.total_us), Some(700));
    }
}
