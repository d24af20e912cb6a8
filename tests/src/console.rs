//! A console-socket receiver, as a caller of `create --console-socket` is: it listens on a
//! unix socket, receives the pty master over SCM_RIGHTS and reads what the container writes
//! to its terminal.

use std::io::{ErrorKind, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// A listening console socket; the thread behind it collects the terminal's output.
pub struct ConsoleSocket {
    path: PathBuf,
    reader: Option<JoinHandle<Result<Vec<u8>, String>>>,
}

/// Receives one fd over `stream` (SCM_RIGHTS).
fn recv_fd(stream: RawFd) -> Result<OwnedFd, String> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(stream, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(|e| format!("recvmsg on the console socket: {e}"))?;
    for c in msg.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table for us; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err("no SCM_RIGHTS fd in the console socket message".into())
}

fn serve(listener: UnixListener, limit: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + limit;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err("nobody connected to the console socket".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let master = recv_fd(stream.as_raw_fd())?;
    let mut file = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            PollFlags::POLLIN,
        )];
        let n = poll(&mut fds, PollTimeout::from(100u16)).map_err(|e| e.to_string())?;
        if n == 0 {
            continue;
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            // EIO: every slave side is closed, the container's terminal is gone.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => return Err(format!("read from the pty master: {e}")),
        }
    }
    Ok(out)
}

impl ConsoleSocket {
    /// Listens on `<dir>/console.sock`; reads the terminal for at most `limit`.
    pub fn listen(dir: &Path, limit: Duration) -> Self {
        let path = dir.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind console socket");
        let reader = std::thread::spawn(move || serve(listener, limit));
        Self {
            path,
            reader: Some(reader),
        }
    }

    /// The socket path to pass as `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything read from the master until the terminal closed (or the limit passed).
    pub fn output(mut self) -> Result<Vec<u8>, String> {
        self.reader
            .take()
            .expect("reader")
            .join()
            .map_err(|_| "console reader panicked".to_string())?
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
