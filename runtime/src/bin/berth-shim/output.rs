//! The container's output: written to the CRI log file and copied to every attached client.
//! A slow or vanished client is dropped; it never holds up the container or the log.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use berth_runtime::cri_log::{LineSplitter, Stream, DEFAULT_MAX_LINE};
use berth_runtime::shim_protocol::{write_frame, FrameStream};

/// How long a write to an attached client may block before the client is dropped.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// One read of the container's output.
const PUMP_BUFFER: usize = 32 * 1024;

#[derive(Debug)]
struct Log {
    path: Option<PathBuf>,
    file: Option<File>,
    stdout: LineSplitter,
    stderr: LineSplitter,
}

/// Shared by the reader threads, the control socket (attach, reopen) and the exit path.
#[derive(Debug, Clone)]
pub struct Output {
    log: Arc<Mutex<Log>>,
    clients: Arc<Mutex<Vec<UnixStream>>>,
}

fn open_log(path: &PathBuf) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl Output {
    pub fn new(log_path: Option<PathBuf>) -> io::Result<Self> {
        let file = log_path.as_ref().map(open_log).transpose()?;
        Ok(Self {
            log: Arc::new(Mutex::new(Log {
                path: log_path,
                file,
                stdout: LineSplitter::new(Stream::Stdout, DEFAULT_MAX_LINE),
                stderr: LineSplitter::new(Stream::Stderr, DEFAULT_MAX_LINE),
            })),
            clients: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// After the kubelet renamed the log file: continue in a new file at the same path.
    pub fn reopen(&self) -> io::Result<()> {
        let mut log = self.log.lock().expect("log lock");
        if let Some(path) = log.path.clone() {
            log.file = Some(open_log(&path)?);
        }
        Ok(())
    }

    pub fn add_client(&self, client: UnixStream) -> io::Result<()> {
        client.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT))?;
        self.clients.lock().expect("clients lock").push(client);
        Ok(())
    }

    fn write(&self, stream: Stream, data: &[u8]) {
        let now = chrono::Utc::now();
        {
            let mut guard = self.log.lock().expect("log lock");
            let log = &mut *guard;
            if let Some(file) = log.file.as_mut() {
                let splitter = match stream {
                    Stream::Stdout => &mut log.stdout,
                    Stream::Stderr => &mut log.stderr,
                };
                if let Err(e) = splitter.feed(data, now, file) {
                    tracing::warn!(error = %e, "write the container log");
                }
            }
        }
        let frame_stream = match stream {
            Stream::Stdout => FrameStream::Stdout,
            Stream::Stderr => FrameStream::Stderr,
        };
        self.clients
            .lock()
            .expect("clients lock")
            .retain_mut(|c| write_frame(c, frame_stream, data).is_ok());
    }

    /// Writes out partial lines and ends every attach stream (the container exited).
    pub fn finish(&self) {
        let now = chrono::Utc::now();
        {
            let mut guard = self.log.lock().expect("log lock");
            let log = &mut *guard;
            if let Some(file) = log.file.as_mut() {
                let _ = log.stdout.flush(now, file);
                let _ = log.stderr.flush(now, file);
                let _ = file.sync_all();
            }
        }
        for c in self.clients.lock().expect("clients lock").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Copies `source` until EOF (or EIO: a pty whose slave side is gone) on its own thread.
    pub fn pump(&self, mut source: File, stream: Stream) -> std::thread::JoinHandle<()> {
        let out = self.clone();
        std::thread::spawn(move || {
            // The buffer is allocated once there is something to read (or EOF): the shim of
            // a container that never writes to this stream does not keep it resident.
            wait_readable(&source);
            let mut buf = vec![0u8; PUMP_BUFFER];
            loop {
                match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.write(stream, &buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        })
    }
}

/// Waits until `source` is readable, at EOF or failed (poll errors end the wait too: the read
/// that follows reports them).
fn wait_readable(source: &File) {
    let mut fds = [PollFd::new(source.as_fd(), PollFlags::POLLIN)];
    while let Err(Errno::EINTR) = poll(&mut fds, PollTimeout::NONE) {}
}

/// The container's stdin, shared by attach clients.
#[derive(Debug, Clone, Default)]
pub struct Stdin(Arc<Mutex<Option<File>>>);

impl Stdin {
    pub fn new(file: Option<File>) -> Self {
        Self(Arc::new(Mutex::new(file)))
    }

    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        match self.0.lock().expect("stdin lock").as_mut() {
            Some(f) => f.write_all(data),
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed")),
        }
    }

    /// Closes the container's stdin (stdin_once, after the first attach ended).
    pub fn close(&self) {
        self.0.lock().expect("stdin lock").take();
    }

    pub fn is_open(&self) -> bool {
        self.0.lock().expect("stdin lock").is_some()
    }
}
