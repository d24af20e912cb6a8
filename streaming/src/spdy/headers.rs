//! SPDY/3 header blocks: the uncompressed name/value block and its zlib compression with the
//! SPDY/3 preset dictionary. Each direction of a connection has one compression context that
//! lives as long as the connection (every block is flushed with `Z_SYNC_FLUSH`).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::FrameError;

/// The zlib preset dictionary of SPDY/3 (draft 3, section 2.6.10.1), 1423 bytes.
pub(crate) const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

/// Largest decompressed header block accepted (a bound against zlib bombs).
const MAX_DECOMPRESSED: usize = 256 * 1024;

/// Header name/value pairs of one SYN_STREAM, SYN_REPLY or HEADERS frame. Names are lower-case
/// on the wire; look-ups ignore case. Multiple values of one name are NUL-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// An empty header block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pair (the name is lower-cased).
    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
    }

    /// The first value of `name` (case-insensitive), up to the first NUL.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }

    /// Serialises the uncompressed block: count, then (length, name, length, value) pairs.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (name, value) in &self.0 {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    fn decode(block: &[u8]) -> Result<Self, FrameError> {
        let mut pos = 0usize;
        let take_u32 = |pos: &mut usize| -> Result<u32, FrameError> {
            let bytes = block
                .get(*pos..*pos + 4)
                .ok_or(FrameError::HeaderBlock("truncated length"))?;
            *pos += 4;
            Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        };
        let count = take_u32(&mut pos)? as usize;
        if count > 4096 {
            return Err(FrameError::HeaderBlock("too many headers"));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let field = |pos: &mut usize| -> Result<String, FrameError> {
                let len = take_u32(pos)? as usize;
                let bytes = block
                    .get(*pos..*pos + len)
                    .ok_or(FrameError::HeaderBlock("truncated name or value"))?;
                *pos += len;
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| FrameError::HeaderBlock("header is not UTF-8"))
            };
            let name = field(&mut pos)?;
            let value = field(&mut pos)?;
            pairs.push((name, value));
        }
        Ok(Self(pairs))
    }
}

/// The compressing side of one connection direction.
pub(crate) struct HeaderEncoder {
    zlib: Compress,
}

impl HeaderEncoder {
    pub(crate) fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        // Setting a dictionary on a fresh deflate stream cannot fail.
        let _ = zlib.set_dictionary(DICTIONARY);
        Self { zlib }
    }

    pub(crate) fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let raw = headers.encode();
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let start = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(raw.len() / 2 + 64);
            }
            self.zlib
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|_| FrameError::HeaderBlock("zlib compression failed"))?;
            let consumed = (self.zlib.total_in() - start) as usize;
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompressing side of one connection direction.
pub(crate) struct HeaderDecoder {
    zlib: Decompress,
}

impl HeaderDecoder {
    pub(crate) fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    pub(crate) fn decode(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_DECOMPRESSED {
                    return Err(FrameError::HeaderBlock(
                        "decompressed header block too large",
                    ));
                }
                out.reserve(out.len().max(256));
            }
            let (before_in, before_out) = (self.zlib.total_in(), self.zlib.total_out());
            match self
                .zlib
                .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => return Err(FrameError::HeaderBlock("zlib stream ended")),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib.set_dictionary(DICTIONARY).map_err(|_| {
                        FrameError::HeaderBlock("peer uses another zlib dictionary")
                    })?;
                    continue;
                }
                Err(_) => return Err(FrameError::HeaderBlock("zlib data is corrupt")),
            }
            let consumed = (self.zlib.total_in() - start) as usize;
            if consumed == block.len() && out.len() < out.capacity() {
                return Headers::decode(&out);
            }
            if self.zlib.total_in() == before_in
                && self.zlib.total_out() == before_out
                && out.len() < out.capacity()
            {
                return Err(FrameError::HeaderBlock("truncated zlib data"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_one_context_per_direction() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        for i in 0..3 {
            let mut h = Headers::new();
            h.push("streamType", "stdout");
            h.push("port", &i.to_string());
            let block = enc.encode(&h).unwrap();
            let back = dec.decode(&block).unwrap();
            assert_eq!(back.get("streamtype"), Some("stdout"));
            assert_eq!(back.get("PORT"), Some(i.to_string().as_str()));
        }
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }
}
