//! The CRI container log format: `<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <content>` a line,
//! `P` records (partial) joined with what follows on the same stream up to an `F` record.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One logical line of a container's output (partial records joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp of its first record.
    pub timestamp: String,
    pub stream: Stream,
    pub content: String,
}

/// Parses a log incrementally: feed it bytes as the file grows, get complete lines back.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes after the last newline seen.
    rest: Vec<u8>,
    /// Partial records per stream: (timestamp of the first, content so far).
    partial: HashMap<Stream, (String, String)>,
}

impl Parser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogLine> {
        self.rest.extend_from_slice(bytes);
        let Some(end) = self.rest.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.rest.drain(..=end).collect();
        let text = String::from_utf8_lossy(&complete);
        text.lines().filter_map(|l| self.record(l)).collect()
    }

    /// Whatever partial records were left without an `F` (the container died mid-line).
    pub fn finish(mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        if !self.rest.is_empty() {
            let rest = String::from_utf8_lossy(&self.rest).into_owned();
            out.extend(self.record(&rest));
        }
        let mut left: Vec<_> = self.partial.drain().collect();
        left.sort_by(|a, b| a.1 .0.cmp(&b.1 .0));
        out.extend(
            left.into_iter()
                .map(|(stream, (timestamp, content))| LogLine {
                    timestamp,
                    stream,
                    content,
                }),
        );
        out
    }

    fn record(&mut self, line: &str) -> Option<LogLine> {
        let mut parts = line.splitn(4, ' ');
        let timestamp = parts.next()?;
        let stream = match parts.next()? {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            _ => return None,
        };
        let tag = parts.next()?;
        let content = parts.next().unwrap_or("");
        let partial = tag.split(':').next() == Some("P");
        let entry = self
            .partial
            .entry(stream)
            .or_insert_with(|| (timestamp.to_owned(), String::new()));
        entry.1.push_str(content);
        if partial {
            return None;
        }
        let (timestamp, content) = self.partial.remove(&stream)?;
        Some(LogLine {
            timestamp,
            stream,
            content,
        })
    }
}

#[cfg(test)]
/// All lines of a whole log file's content.
pub fn parse(bytes: &[u8]) -> Vec<LogLine> {
    let mut p = Parser::default();
    let mut lines = p.feed(bytes);
    lines.extend(p.finish());
    lines
}

/// The last `n` lines (all of them when `n` is `None`).
pub fn tail(mut lines: Vec<LogLine>, n: Option<usize>) -> Vec<LogLine> {
    if let Some(n) = n {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_records() {
        let log =
            b"2024-01-01T00:00:00.1Z stdout F hello world\n2024-01-01T00:00:00.2Z stderr F oops\n";
        let lines = parse(log);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].content, "hello world");
        assert_eq!(lines[0].stream, Stream::Stdout);
        assert_eq!(lines[0].timestamp, "2024-01-01T00:00:00.1Z");
        assert_eq!(lines[1].content, "oops");
        assert_eq!(lines[1].stream, Stream::Stderr);
    }

    #[test]
    fn partial_records_joined_per_stream() {
        let log = b"t1 stdout P abc\nt2 stderr F err\nt3 stdout P def\nt4 stdout F ghi\n";
        let lines = parse(log);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].content, "err");
        assert_eq!(
            lines[1],
            LogLine {
                timestamp: "t1".into(),
                stream: Stream::Stdout,
                content: "abcdefghi".into()
            }
        );
    }

    #[test]
    fn empty_content_and_tags_and_garbage() {
        let lines = parse(b"t1 stdout F\nnot a record\nt2 stdout F:x a  b \n");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].content, "");
        assert_eq!(lines[1].content, "a  b ");
    }

    #[test]
    fn incremental_feed_keeps_partial_lines() {
        let mut p = Parser::default();
        assert!(p.feed(b"t1 stdout F he").is_empty());
        let lines = p.feed(b"llo\nt2 stdout P x");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].content, "hello");
        let left = p.finish();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].content, "x");
    }

    #[test]
    fn tail_keeps_the_last() {
        let lines = parse(b"t stdout F 1\nt stdout F 2\nt stdout F 3\n");
        let t: Vec<_> = tail(lines.clone(), Some(2))
            .into_iter()
            .map(|l| l.content)
            .collect();
        assert_eq!(t, ["2", "3"]);
        assert_eq!(tail(lines.clone(), Some(10)).len(), 3);
        assert_eq!(tail(lines.clone(), Some(0)).len(), 0);
        assert_eq!(tail(lines, None).len(), 3);
    }
}
