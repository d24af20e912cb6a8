//! The shim's control socket: attach, resize, reopen-log and state requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use berth_runtime::shim_protocol::{ExitRecord, Reply, ShimRequest, ShimState};
use berth_runtime::sys;

use crate::output::{Output, Stdin};

/// What the request handlers share.
#[derive(Debug, Clone)]
pub struct Shared {
    pub output: Output,
    pub stdin: Stdin,
    pub stdin_once: bool,
    pub pty: Option<Arc<OwnedFd>>,
    pub init_pid: i32,
    pub exited: Arc<Mutex<Option<ExitRecord>>>,
}

/// Accepts connections until the listener is closed; each one on its own thread.
pub fn serve(listener: UnixListener, shared: Shared) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let shared = shared.clone();
            std::thread::spawn(move || {
                if let Err(e) = handle(conn, &shared) {
                    tracing::debug!(error = %e, "control connection ended");
                }
            });
        }
    });
}

fn reply(conn: &mut UnixStream, result: std::io::Result<()>) -> std::io::Result<()> {
    let r = match result {
        Ok(()) => Reply {
            ok: true,
            error: None,
        },
        Err(e) => Reply {
            ok: false,
            error: Some(e.to_string()),
        },
    };
    let mut line = serde_json::to_vec(&r).expect("reply serializes");
    line.push(b'\n');
    conn.write_all(&line)
}

fn handle(conn: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    // One bounded request line.
    (&mut reader).take(4096).read_line(&mut line)?;
    let mut conn = conn;
    let request: ShimRequest = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            return reply(
                &mut conn,
                Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)),
            )
        }
    };
    match request {
        ShimRequest::ReopenLog => {
            let r = shared.output.reopen();
            reply(&mut conn, r)
        }
        ShimRequest::Resize { width, height } => {
            let r = match &shared.pty {
                Some(pty) => {
                    sys::set_winsize(pty.as_ref(), height, width).map_err(std::io::Error::from)
                }
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "the container has no terminal",
                )),
            };
            reply(&mut conn, r)
        }
        ShimRequest::State => {
            let state = ShimState {
                init_pid: shared.init_pid,
                exited: shared.exited.lock().expect("exit lock").clone(),
            };
            let mut out = serde_json::to_vec(&state).expect("state serializes");
            out.push(b'\n');
            conn.write_all(&out)
        }
        ShimRequest::Attach { stdin } => {
            reply(&mut conn, Ok(()))?;
            shared.output.add_client(conn.try_clone()?)?;
            if !stdin || !shared.stdin.is_open() {
                // Hold the connection until the client goes; output is pushed by the pumps.
                let mut sink = [0u8; 256];
                while reader.read(&mut sink)? > 0 {}
                return Ok(());
            }
            let mut buf = [0u8; 8192];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if shared.stdin.write(&buf[..n]).is_err() {
                    break;
                }
            }
            if shared.stdin_once {
                shared.stdin.close();
            }
            Ok(())
        }
    }
}
