//! What berthd and berth-shim say to each other: the shim's readiness line, its control socket
//! requests, the attach stream framing and the exit record it leaves on disk.
//!
//! Files in a shim's state directory:
//! - `shim.sock` — control socket: one JSON [`ShimRequest`] line per connection; `attach` then
//!   carries frames (shim → client) and raw stdin bytes (client → shim).
//! - `exit.json` — [`ExitRecord`], written atomically when the container's init exits.
//! - `shim.pid`, `init.pid` — the shim's and the container init's PIDs.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const SOCKET: &str = "shim.sock";
pub const EXIT_FILE: &str = "exit.json";
pub const SHIM_PID_FILE: &str = "shim.pid";
pub const INIT_PID_FILE: &str = "init.pid";

/// The line the shim prints on its stdout once the container is created (or creation failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ready {
    Created { shim_pid: i32, init_pid: i32 },
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ShimRequest {
    /// Stream the container's output; with `stdin`, what the client sends goes to its stdin.
    Attach { stdin: bool },
    /// Set the pty's window size.
    Resize { width: u16, height: u16 },
    /// Reopen the log file (after the kubelet rotated it).
    ReopenLog,
    /// Is the container still running? Answered with a [`ShimState`] line.
    State,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    pub init_pid: i32,
    pub exited: Option<ExitRecord>,
}

/// A reply line for requests other than attach: `{"ok":true}` or `{"ok":false,"error":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, or 128 + signal for a process killed by a signal (as shells report it).
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub exited_at: DateTime<Utc>,
}

impl ExitRecord {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(EXIT_FILE)
    }

    /// The record in `state_dir`, if the container has exited.
    pub fn load(state_dir: &Path) -> io::Result<Option<Self>> {
        match std::fs::read(Self::path(state_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Attach frame streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameStream {
    Stdout = 1,
    Stderr = 2,
}

/// Largest frame payload; output is cut into frames no larger.
pub const MAX_FRAME: usize = 32 * 1024;

/// Writes one frame: stream byte, big-endian u32 length, payload.
pub fn write_frame(out: &mut impl Write, stream: FrameStream, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(MAX_FRAME) {
        let mut frame = Vec::with_capacity(chunk.len() + 5);
        frame.push(stream as u8);
        frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        frame.extend_from_slice(chunk);
        out.write_all(&frame)?;
    }
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(input: &mut impl Read) -> io::Result<Option<(FrameStream, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let stream = match header[0] {
        1 => FrameStream::Stdout,
        2 => FrameStream::Stderr,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown attach stream {other}"),
            ))
        }
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("attach frame of {len} bytes"),
        ));
    }
    let mut data = vec![0u8; len];
    input.read_exact(&mut data)?;
    Ok(Some((stream, data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameStream::Stderr, &vec![7u8; MAX_FRAME + 3]).unwrap();
        let mut r = &buf[..];
        let (s, a) = read_frame(&mut r).unwrap().unwrap();
        let (_, b) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((s, a.len(), b.len()), (FrameStream::Stderr, MAX_FRAME, 3));
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn requests_are_tagged_json() {
        let r: ShimRequest =
            serde_json::from_str(r#"{"op":"resize","width":80,"height":24}"#).unwrap();
        assert_eq!(
            r,
            ShimRequest::Resize {
                width: 80,
                height: 24
            }
        );
        assert_eq!(
            serde_json::to_string(&ShimRequest::ReopenLog).unwrap(),
            r#"{"op":"reopen_log"}"#
        );
    }
}
