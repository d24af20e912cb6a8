//! Attach for the streaming server: an attach session on the container's shim socket. The
//! shim sends the container's output as frames (`shim_protocol`: stream byte, big-endian u32
//! length, payload) and writes what we send to the container's stdin. Dropping the future
//! closes the socket, which detaches.

use std::io;

use berth_runtime::shim_protocol::{FrameStream, MAX_FRAME};
use berth_streaming::{BackendError, Output, StreamIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio::task::JoinSet;

use crate::shim_client::Shim;

pub(super) async fn attach(shim: Shim, tty: bool, io: StreamIo) -> Result<(), BackendError> {
    let want_stdin = io.stdin.is_some();
    let shim = std::sync::Arc::new(shim);
    let s = shim.clone();
    let conn = tokio::task::spawn_blocking(move || s.attach(want_stdin))
        .await
        .map_err(|e| BackendError::Runtime(Box::new(e)))?
        .map_err(|e| BackendError::Runtime(Box::new(e)))?;
    conn.set_nonblocking(true)?;
    let (read, mut write) = UnixStream::from_std(conn)?.into_split();

    let StreamIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let mut input = JoinSet::new();
    if let Some(mut from) = stdin {
        input.spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut write).await;
            let _ = write.shutdown().await;
        });
    }
    if let Some(mut resize) = resize {
        input.spawn(async move {
            while let Some(size) = resize.recv().await {
                let s = shim.clone();
                let resized =
                    tokio::task::spawn_blocking(move || s.resize(size.width, size.height)).await;
                if let Ok(Err(e)) = resized {
                    tracing::debug!(error = %e, "resize attached terminal");
                }
            }
        });
    }
    let result = copy_frames(read, stdout, stderr, tty).await;
    drop(input);
    result.map_err(BackendError::Io)
}

/// Frames → the client's stdout/stderr (a TTY's output all goes to stdout) until the shim
/// closes the session (the container exited).
async fn copy_frames(
    mut read: OwnedReadHalf,
    mut stdout: Option<Output>,
    mut stderr: Option<Output>,
    tty: bool,
) -> io::Result<()> {
    let mut data = vec![0u8; MAX_FRAME];
    loop {
        let mut header = [0u8; 5];
        match read.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("attach frame of {len} bytes"),
            ));
        }
        read.read_exact(&mut data[..len]).await?;
        let out = match header[0] {
            x if x == FrameStream::Stdout as u8 => &mut stdout,
            x if x == FrameStream::Stderr as u8 && tty => &mut stdout,
            x if x == FrameStream::Stderr as u8 => &mut stderr,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown attach stream {other}"),
                ))
            }
        };
        // A client that went away on one stream does not stop the others.
        if let Some(w) = out {
            if w.write_all(&data[..len]).await.is_err() {
                *out = None;
            }
        }
    }
    for w in [stdout, stderr].iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
    Ok(())
}
