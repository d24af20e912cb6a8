//! SPDY/3.1 frames: the in-memory form, their encoding and an async frame reader.
//!
//! Control frames: `1 | version(15) | type(16) | flags(8) | length(24) | payload`.
//! Data frames: `0 | stream id(31) | flags(8) | length(24) | payload`.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::headers::{HeaderDecoder, HeaderEncoder, Headers};

/// FIN flag of DATA, SYN_STREAM, SYN_REPLY and HEADERS frames.
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL flag of SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// SETTINGS id of the initial per-stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// RST_STREAM status codes used here.
pub mod rst {
    /// PROTOCOL_ERROR
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL
    pub const CANCEL: u32 = 5;
}
/// GOAWAY status: OK.
pub const GOAWAY_OK: u32 = 0;
/// GOAWAY status: PROTOCOL_ERROR.
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

const VERSION: u16 = 3;
const MAX_CONTROL_PAYLOAD: usize = 1 << 20;

/// An error reading or decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed or closed mid-frame.
    #[error("spdy connection: {0}")]
    Io(#[from] std::io::Error),
    /// A control frame of another SPDY version.
    #[error("spdy: unsupported version {0} (only SPDY/3.1 is served)")]
    Version(u16),
    /// A frame too short for its type or too large.
    #[error("spdy: malformed {kind} frame ({len} bytes)")]
    Malformed {
        /// frame type
        kind: &'static str,
        /// payload length
        len: usize,
    },
    /// A bad header block.
    #[error("spdy header block: {0}")]
    HeaderBlock(&'static str),
}

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// stream id (odd from clients)
        stream_id: u32,
        /// flags (FIN, UNIDIRECTIONAL)
        flags: u8,
        /// headers
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// stream id
        stream_id: u32,
        /// flags (FIN)
        flags: u8,
        /// headers
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// stream id
        stream_id: u32,
        /// status code
        status: u32,
    },
    /// Settings (id, value) pairs.
    Settings {
        /// entries
        entries: Vec<(u32, u32)>,
    },
    /// Liveness check, echoed by the receiver.
    Ping {
        /// id (odd from clients, even from servers)
        id: u32,
    },
    /// No more new streams.
    GoAway {
        /// last stream the sender processed
        last_good_stream_id: u32,
        /// status code
        status: u32,
    },
    /// Additional headers on a stream.
    Headers {
        /// stream id
        stream_id: u32,
        /// flags (FIN)
        flags: u8,
        /// headers
        headers: Headers,
    },
    /// Flow-control credit (stream id 0: the whole session).
    WindowUpdate {
        /// stream id
        stream_id: u32,
        /// credit in bytes
        delta: u32,
    },
    /// Payload of a stream.
    Data {
        /// stream id
        stream_id: u32,
        /// flags (FIN)
        flags: u8,
        /// payload
        data: Bytes,
    },
    /// A control frame type this implementation ignores.
    Unknown {
        /// its type
        kind: u16,
    },
}

fn control_header(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(((flags as u32) << 24) | (len as u32 & 0x00ff_ffff));
}

/// Encodes frames, owning the sending direction's header compression context.
pub(crate) struct FrameEncoder {
    headers: HeaderEncoder,
}

impl FrameEncoder {
    pub(crate) fn new() -> Self {
        Self {
            headers: HeaderEncoder::new(),
        }
    }

    pub(crate) fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.headers.encode(headers)?;
                control_header(out, 1, *flags, 10 + block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(0);
                out.put_u16(0);
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    2
                } else {
                    8
                };
                let block = self.headers.encode(headers)?;
                control_header(out, kind, *flags, 4 + block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, 3, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { entries } => {
                control_header(out, 4, 0, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for (id, value) in entries {
                    out.put_u32(id & 0x00ff_ffff);
                    out.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, 6, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, 7, 0, 8);
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, 9, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(((*flags as u32) << 24) | (data.len() as u32 & 0x00ff_ffff));
                out.extend_from_slice(data);
            }
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }
}

/// Reads frames from one direction of a connection.
pub(crate) struct FrameReader<R> {
    io: R,
    headers: HeaderDecoder,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R) -> Self {
        Self {
            io,
            headers: HeaderDecoder::new(),
        }
    }

    /// The next frame; `Ok(None)` on a clean EOF between frames.
    pub(crate) async fn read(&mut self) -> Result<Option<Frame>, FrameError> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.io.read_exact(&mut head[1..]).await?;
        let flags = head[4];
        let len = (be32(&head[4..8]) & 0x00ff_ffff) as usize;
        if head[0] & 0x80 == 0 {
            let mut data = vec![0u8; len];
            self.io.read_exact(&mut data).await?;
            return Ok(Some(Frame::Data {
                stream_id: be32(&head[..4]) & 0x7fff_ffff,
                flags,
                data: data.into(),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        let kind = u16::from_be_bytes([head[2], head[3]]);
        if len > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::Malformed {
                kind: "control",
                len,
            });
        }
        let mut p = vec![0u8; len];
        self.io.read_exact(&mut p).await?;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let need = |min: usize, kind: &'static str| {
            if len < min {
                Err(FrameError::Malformed { kind, len })
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            1 => {
                need(10, "SYN_STREAM")?;
                let headers = self.headers.decode(&p[10..])?;
                Frame::SynStream {
                    stream_id: be32(&p) & 0x7fff_ffff,
                    flags,
                    headers,
                }
            }
            2 | 8 => {
                need(4, "SYN_REPLY/HEADERS")?;
                let headers = self.headers.decode(&p[4..])?;
                let stream_id = be32(&p) & 0x7fff_ffff;
                if kind == 2 {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            3 => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: be32(&p) & 0x7fff_ffff,
                    status: be32(&p[4..]),
                }
            }
            4 => {
                need(4, "SETTINGS")?;
                let n = be32(&p) as usize;
                if len < 4 + 8 * n {
                    return Err(FrameError::Malformed {
                        kind: "SETTINGS",
                        len,
                    });
                }
                let entries = (0..n)
                    .map(|i| (be32(&p[4 + 8 * i..]) & 0x00ff_ffff, be32(&p[8 + 8 * i..])))
                    .collect();
                Frame::Settings { entries }
            }
            6 => {
                need(4, "PING")?;
                Frame::Ping { id: be32(&p) }
            }
            7 => {
                need(4, "GOAWAY")?;
                let status = if len >= 8 { be32(&p[4..]) } else { GOAWAY_OK };
                Frame::GoAway {
                    last_good_stream_id: be32(&p) & 0x7fff_ffff,
                    status,
                }
            }
            9 => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: be32(&p) & 0x7fff_ffff,
                    delta: be32(&p[4..]) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let mut enc = FrameEncoder::new();
        let mut h = Headers::new();
        h.push("streamtype", "error");
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: h.clone(),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hi"),
            },
            Frame::Ping { id: 7 },
            Frame::Settings {
                entries: vec![(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)],
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 100,
            },
            Frame::RstStream {
                stream_id: 5,
                status: rst::CANCEL,
            },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: GOAWAY_OK,
            },
        ];
        let mut buf = BytesMut::new();
        for f in &frames {
            enc.encode(f, &mut buf).unwrap();
        }
        let mut reader = FrameReader::new(&buf[..]);
        for f in &frames {
            assert_eq!(reader.read().await.unwrap().as_ref(), Some(f));
        }
        assert!(reader.read().await.unwrap().is_none());
    }
}
