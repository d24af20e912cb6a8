//! A minimal SPDY/3 client for tests, written from the SPDY/3 draft independently of the
//! server's framing code: HTTP upgrade (plain or over TLS), SYN_STREAM with zlib+dictionary
//! headers, DATA, SETTINGS, WINDOW_UPDATE, PING, RST_STREAM, GOAWAY, and a reader that files
//! frames per stream. Also used by berthd's streaming tests (cri-server/tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// The connection under the SPDY framing: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Box<dyn Io>;

const DICT: &[u8] = include_bytes!("spdy3_dictionary.bin");

#[derive(Default, Debug, Clone)]
pub struct StreamState {
    pub replied: bool,
    pub data: Vec<u8>,
    pub fin: bool,
    pub reset: Option<u32>,
}

#[derive(Default)]
pub struct State {
    pub streams: HashMap<u32, StreamState>,
    pub goaway: bool,
    pub pings: Vec<u32>,
    pub eof: bool,
}

pub struct SpdyConn {
    wr: tokio::sync::Mutex<(WriteHalf<Conn>, Compress)>,
    pub state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    next_id: Mutex<u32>,
    reader: JoinHandle<()>,
    paused: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for SpdyConn {
    /// The socket closes once both halves are gone: stop the reader too.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Sends the upgrade request; returns the status line's code, the response head, and the
/// connection if it switched protocols.
pub async fn connect(
    url: &str,
    protocols: &[&str],
    upgrade: bool,
) -> (u16, String, Option<SpdyConn>) {
    connect_tls(url, protocols, upgrade, None).await
}

/// [`connect`], for `https://` URLs through `tls`.
pub async fn connect_tls(
    url: &str,
    protocols: &[&str],
    upgrade: bool,
    tls: Option<TlsConnector>,
) -> (u16, String, Option<SpdyConn>) {
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, None),
        (None, Some(rest)) => (rest, Some(tls.expect("an https URL needs a TLS connector"))),
        _ => panic!("not an http(s) URL: {url}"),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let plain = TcpStream::connect(host).await.unwrap();
    let mut tcp: Conn = match tls {
        None => Box::new(plain),
        Some(connector) => {
            let name = host.rsplit_once(':').unwrap().0.trim_matches(['[', ']']);
            let name =
                tokio_rustls::rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
            Box::new(connector.connect(name, plain).await.expect("TLS handshake"))
        }
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    if upgrade {
        req.push_str("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
    }
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if code != 101 {
        let mut body = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut body))
            .await
            .map(|r| r.unwrap_or(0))
            .unwrap_or(0);
        return (code, head + &String::from_utf8_lossy(&body[..n]), None);
    }
    let (rd, wr) = tokio::io::split(tcp);
    let mut comp = Compress::new(Compression::default(), true);
    comp.set_dictionary(DICT).unwrap();
    let state = Arc::new(Mutex::new(State::default()));
    let changed = Arc::new(Notify::new());
    let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn(read_frames(
        rd,
        state.clone(),
        changed.clone(),
        paused.clone(),
    ));
    let conn = SpdyConn {
        wr: tokio::sync::Mutex::new((wr, comp)),
        state,
        changed,
        next_id: Mutex::new(1),
        reader,
        paused,
    };
    (code, head, Some(conn))
}

fn u32be(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

async fn read_frames(
    mut rd: ReadHalf<Conn>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    paused: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut inflate = Decompress::new(true);
    loop {
        // A paused client reads nothing (until resumed or dropped, which aborts this task).
        while paused.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut head = [0u8; 8];
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = (u32be(&head[4..]) & 0xff_ffff) as usize;
        let flags = head[4];
        let mut payload = vec![0u8; len];
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        let mut st = state.lock().unwrap();
        if head[0] & 0x80 == 0 {
            let id = u32be(&head) & 0x7fff_ffff;
            let s = st.streams.entry(id).or_default();
            s.data.extend_from_slice(&payload);
            if flags & 1 != 0 {
                s.fin = true;
            }
        } else {
            assert_eq!(
                u16::from_be_bytes([head[0] & 0x7f, head[1]]),
                3,
                "server spoke another SPDY version"
            );
            match u16::from_be_bytes([head[2], head[3]]) {
                2 => {
                    // SYN_REPLY: check its header block decompresses with the shared context.
                    let block = &payload[4..];
                    let mut out = Vec::with_capacity(64 * 1024);
                    let start = inflate.total_in();
                    loop {
                        let used = (inflate.total_in() - start) as usize;
                        if used == block.len() {
                            break;
                        }
                        match inflate.decompress_vec(
                            &block[used..],
                            &mut out,
                            FlushDecompress::Sync,
                        ) {
                            Err(e) if e.needs_dictionary().is_some() => {
                                inflate.set_dictionary(DICT).unwrap();
                            }
                            r => {
                                r.expect("SYN_REPLY header block must inflate");
                            }
                        }
                    }
                    assert!(out.len() >= 4, "SYN_REPLY header block holds a count");
                    let id = u32be(&payload) & 0x7fff_ffff;
                    st.streams.entry(id).or_default().replied = true;
                }
                3 => {
                    let id = u32be(&payload) & 0x7fff_ffff;
                    st.streams.entry(id).or_default().reset = Some(u32be(&payload[4..]));
                }
                6 => st.pings.push(u32be(&payload)),
                7 => st.goaway = true,
                _ => {}
            }
        }
        drop(st);
        changed.notify_waiters();
    }
    state.lock().unwrap().eof = true;
    changed.notify_waiters();
}

impl SpdyConn {
    async fn write(&self, bytes: &[u8]) {
        let mut g = self.wr.lock().await;
        let _ = g.0.write_all(bytes).await;
    }

    fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80, 3];
        f.extend_from_slice(&kind.to_be_bytes());
        f.extend_from_slice(&(((flags as u32) << 24) | payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Opens a stream with the given headers; returns its id.
    pub async fn open(&self, headers: &[(&str, &str)], fin: bool) -> u32 {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            let id = *n;
            *n += 2;
            id
        };
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut g = self.wr.lock().await;
        let mut block = Vec::with_capacity(raw.len() + 128);
        g.1.compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&block);
        let frame = Self::control(1, u8::from(fin), &payload);
        g.0.write_all(&frame).await.unwrap();
        id
    }

    pub async fn data(&self, id: u32, data: &[u8], fin: bool) {
        let mut f = id.to_be_bytes().to_vec();
        f.extend_from_slice(&(((u32::from(fin)) << 24) | data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        self.write(&f).await;
    }

    pub async fn settings_initial_window(&self, window: u32) {
        let mut p = 1u32.to_be_bytes().to_vec();
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(&window.to_be_bytes());
        self.write(&Self::control(4, 0, &p)).await;
    }

    pub async fn window_update(&self, id: u32, delta: u32) {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&delta.to_be_bytes());
        self.write(&Self::control(9, 0, &p)).await;
    }

    pub async fn ping(&self, id: u32) {
        self.write(&Self::control(6, 0, &id.to_be_bytes())).await;
    }

    /// RST_STREAM with `status` (5 = CANCEL).
    pub async fn reset(&self, id: u32, status: u32) {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&status.to_be_bytes());
        self.write(&Self::control(3, 0, &p)).await;
    }

    /// GOAWAY (status OK): the client opens no more streams.
    pub async fn goaway(&self, last_good: u32) {
        let mut p = last_good.to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        self.write(&Self::control(7, 0, &p)).await;
    }

    /// Stops (or resumes) reading from the socket: a client that no longer reads.
    pub fn pause_reading(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes received so far on a stream.
    pub fn received(&self, id: u32) -> usize {
        self.state
            .lock()
            .unwrap()
            .streams
            .get(&id)
            .map_or(0, |s| s.data.len())
    }

    /// Waits for the server to close the connection (GOAWAY then EOF), at most 20 s.
    pub async fn closed_by_server(&self) -> bool {
        self.wait(|s| s.eof).await
    }

    /// Waits (at most 20 s) until `cond` holds on the connection state.
    pub async fn wait(&self, cond: impl Fn(&State) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(&self.state.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Everything received on a stream once it is finished (FIN or RST).
    pub async fn finished(&self, id: u32) -> StreamState {
        assert!(
            self.wait(|s| s
                .streams
                .get(&id)
                .is_some_and(|st| st.fin || st.reset.is_some()))
                .await,
            "stream {id} did not finish"
        );
        self.state.lock().unwrap().streams[&id].clone()
    }
}
