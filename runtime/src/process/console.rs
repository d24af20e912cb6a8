//! The container's terminal (`process.terminal`): init opens a pty in the container's own
//! devpts, makes the slave its controlling terminal and stdio, and sends the master over the
//! `--console-socket` with SCM_RIGHTS (the pty's name as the message), as runc does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use nix::unistd::dup2_stdin;

use crate::error::{Result, RuntimeError};
use crate::sys;

/// Sends `fd` with `name` as payload over a unix socket.
pub fn send_fd(socket: &impl AsRawFd, name: &str, fd: &impl AsRawFd) -> Result<()> {
    let iov = [IoSlice::new(name.as_bytes())];
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| RuntimeError::sys("send the pty master over the console socket", e))?;
    Ok(())
}

/// Receives a descriptor sent by [`send_fd`], with its name.
pub fn recv_fd(socket: &impl AsRawFd) -> Result<(String, OwnedFd)> {
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| RuntimeError::sys("receive the pty master", e))?;
    let mut fd = None;
    for c in msg
        .cmsgs()
        .map_err(|e| RuntimeError::sys("read cmsgs", e))?
    {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: SCM_RIGHTS just installed this descriptor; nothing else owns it.
                let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let len = msg.bytes;
    let fd = fd.ok_or_else(|| {
        RuntimeError::sys(
            "receive the pty master (no descriptor)",
            nix::errno::Errno::EBADMSG,
        )
    })?;
    Ok((String::from_utf8_lossy(&buf[..len]).into_owned(), fd))
}

/// Creates the pty (after pivot_root), sends the master away, and makes the slave the
/// controlling terminal and stdin/stdout/stderr of the calling process.
pub fn setup(console_socket: &OwnedFd, size: Option<(u16, u16)>, bind_console: bool) -> Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("open /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| RuntimeError::sys("grantpt", e))?;
    unlockpt(&master).map_err(|e| RuntimeError::sys("unlockpt", e))?;
    let name = ptsname_r(&master).map_err(|e| RuntimeError::sys("ptsname", e))?;
    let slave = open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys(format!("open {name}"), e))?;
    if let Some((rows, cols)) = size {
        sys::set_winsize(&slave, rows, cols)
            .map_err(|e| RuntimeError::sys("set the console size", e))?;
    }
    if bind_console {
        // /dev/console is the pty, as in runc.
        let console = Path::new("/dev/console");
        if !console.exists() {
            let _ = std::fs::File::create(console);
        }
        mount(
            Some(Path::new(&name)),
            console,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::sys(format!("bind {name} to /dev/console"), e))?;
    }
    send_fd(console_socket, &name, &master)?;
    drop(master);
    sys::set_controlling_tty(&slave)
        .map_err(|e| RuntimeError::sys("make the pty the controlling terminal", e))?;
    dup2_stdin(&slave).map_err(|e| RuntimeError::sys("dup the pty to stdin", e))?;
    nix::unistd::dup2_stdout(&slave).map_err(|e| RuntimeError::sys("dup the pty to stdout", e))?;
    nix::unistd::dup2_stderr(&slave).map_err(|e| RuntimeError::sys("dup the pty to stderr", e))?;
    Ok(())
}
