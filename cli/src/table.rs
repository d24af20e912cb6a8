//! Column-aligned tables (as docker and nerdctl print them) and the human forms of sizes and
//! ages used in them.

/// Columns padded to their widest cell, three spaces apart; the last column unpadded.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let width = widths.get(i).copied().unwrap_or(0);
                line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count()) + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Decimal units, as docker prints image sizes: `4.19MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let digits = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let digits = if digits.contains('.') {
        digits.trim_end_matches('0').trim_end_matches('.')
    } else {
        &digits
    };
    format!("{digits}{}", UNITS[unit])
}

/// How long ago a CRI timestamp (nanoseconds since the epoch) was, relative to `now_ns`.
pub fn ago(then_ns: i64, now_ns: i64) -> String {
    if then_ns <= 0 {
        return "-".into();
    }
    let s = (now_ns - then_ns).max(0) / 1_000_000_000;
    let (n, unit) = match s {
        0..=1 => return "Just now".into(),
        2..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// An ID as tables show it: without `sha256:`, 12 characters for images, 13 for containers
/// and pods (as crictl does).
pub fn short_id(id: &str, len: usize) -> String {
    id.trim_start_matches("sha256:").chars().take(len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let out = render(
            &["REPOSITORY", "TAG", "SIZE"],
            &[
                vec![
                    "docker.io/library/busybox".into(),
                    "latest".into(),
                    "4.2MB".into(),
                ],
                vec!["x".into(), "v1".into(), "1B".into()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "REPOSITORY                  TAG      SIZE");
        assert_eq!(lines[1], "docker.io/library/busybox   latest   4.2MB");
        assert_eq!(lines[2], "x                           v1       1B");
    }

    #[test]
    fn empty_table_is_the_header() {
        assert_eq!(render(&["A", "B"], &[]), "A   B\n");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(4_194_304), "4.19MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn ages() {
        let s = 1_000_000_000i64;
        assert_eq!(ago(0, 10 * s), "-");
        assert_eq!(ago(10 * s, 10 * s), "Just now");
        assert_eq!(ago(s, 31 * s), "30 seconds ago");
        assert_eq!(ago(s, 61 * s), "1 minute ago");
        assert_eq!(ago(s, 7201 * s), "2 hours ago");
        assert_eq!(ago(s, 3 * 86_400 * s + s), "3 days ago");
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("sha256:0123456789abcdef", 12), "0123456789ab");
        assert_eq!(short_id("abc", 13), "abc");
    }
}
