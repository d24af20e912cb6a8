//! The CRI container log format, as kubelet and crictl read it:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n` — one record per line of output;
//! a line longer than the maximum is split into `P` (partial) records ending with an `F` (full)
//! one; output that ends without a newline stays buffered until the newline, the limit, or a
//! flush (at exit).

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};

/// containerd's default `max_container_log_line_size`.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Turns one stream's bytes into CRI log records.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    max_line: usize,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream, max_line: usize) -> Self {
        Self {
            stream,
            max_line: max_line.max(1),
            pending: Vec::new(),
        }
    }

    /// Feeds output; writes every complete record to `out`.
    pub fn feed(
        &mut self,
        data: &[u8],
        now: DateTime<Utc>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) if self.pending.len() + i <= self.max_line => {
                    self.pending.extend_from_slice(&rest[..i]);
                    self.emit(true, now, out)?;
                    rest = &rest[i + 1..];
                }
                _ => {
                    let room = self.max_line - self.pending.len();
                    let take = room.min(rest.len());
                    self.pending.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.pending.len() == self.max_line {
                        // A full record's worth with no newline: a partial record.
                        self.emit(false, now, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes what is buffered (output that ended without a newline) as a partial record.
    pub fn flush(&mut self, now: DateTime<Utc>, out: &mut impl Write) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.emit(false, now, out)?;
        }
        Ok(())
    }

    fn emit(&mut self, full: bool, now: DateTime<Utc>, out: &mut impl Write) -> io::Result<()> {
        let mut record = Vec::with_capacity(self.pending.len() + 48);
        record.extend_from_slice(now.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
        record.push(b' ');
        record.extend_from_slice(self.stream.as_str().as_bytes());
        record.extend_from_slice(if full { b" F " } else { b" P " });
        record.extend_from_slice(&self.pending);
        record.push(b'\n');
        self.pending.clear();
        // One write per record, so that records of stdout and stderr never interleave.
        out.write_all(&record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(splitter: &mut LineSplitter, chunks: &[&[u8]], flush: bool) -> Vec<String> {
        let now = DateTime::parse_from_rfc3339("2026-11-22T06:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut out = Vec::new();
        for c in chunks {
            splitter.feed(c, now, &mut out).unwrap();
        }
        if flush {
            splitter.flush(now, &mut out).unwrap();
        }
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn full_lines_across_chunks() {
        let mut s = LineSplitter::new(Stream::Stdout, DEFAULT_MAX_LINE);
        let r = records(&mut s, &[b"hel", b"lo\nwor", b"ld\n"], false);
        assert_eq!(
            r,
            vec![
                "2026-11-22T06:00:00.123456789Z stdout F hello",
                "2026-11-22T06:00:00.123456789Z stdout F world"
            ]
        );
    }

    #[test]
    fn long_lines_become_partial_records() {
        let mut s = LineSplitter::new(Stream::Stderr, 4);
        let r = records(&mut s, &[b"abcdefghij\n"], false);
        let tails: Vec<&str> = r.iter().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(tails, vec!["stderr P abcd", "stderr P efgh", "stderr F ij"]);
    }

    #[test]
    fn unterminated_output_is_flushed_as_partial_and_empty_lines_kept() {
        let mut s = LineSplitter::new(Stream::Stdout, 100);
        let r = records(&mut s, &[b"\nlast"], true);
        let tails: Vec<&str> = r.iter().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(tails, vec!["stdout F ", "stdout P last"]);
    }
}
