//! Supervising a process in the foreground (`run` without `--detach`, `exec` without
//! `--detach`): forward signals to it, proxy its pty to our stdio, and return its exit code.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use berth_runtime::sys;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Puts our stdin terminal in raw mode while a pty is proxied; restores it on drop.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        match termios::tcgetattr(stdin.as_fd()) {
            Ok(orig) => {
                let mut raw = orig.clone();
                termios::cfmakeraw(&mut raw);
                let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
                Self(Some(orig))
            }
            Err(_) => Self(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, orig);
        }
    }
}

fn copy_winsize(pty: &OwnedFd) {
    if let Ok((rows, cols)) = sys::get_winsize(&std::io::stdin()) {
        let _ = sys::set_winsize(pty, rows, cols);
    }
}

/// Blocks the forwarded signals and SIGCHLD; they are read from a signalfd instead.
pub fn block_signals() -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block().context("block signals")?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).context("signalfd")
}

/// Runs until `pid` exits; returns its exit code (128+signal if killed).
pub fn supervise(pid: Pid, signals: SignalFd, pty: Option<OwnedFd>) -> Result<i32> {
    let _raw = pty.as_ref().map(|_| RawMode::enter());
    if let Some(p) = &pty {
        copy_winsize(p);
    }
    let mut stdin_open = pty.is_some();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = &pty {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready.get(1).copied().unwrap_or(false) {
            if let Some(p) = &pty {
                match read_fd(p.as_fd(), &mut buf) {
                    Some(n) if n > 0 => {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    _ => {}
                }
            }
        }
        if ready.get(2).copied().unwrap_or(false) {
            if let Some(p) = &pty {
                match std::io::stdin().read(&mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        let _ = nix::unistd::write(p, &buf[..n]);
                    }
                }
            }
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let sig = Signal::try_from(info.ssi_signo as i32).ok();
            match sig {
                Some(Signal::SIGCHLD) | None => {}
                Some(Signal::SIGWINCH) => {
                    if let Some(p) = &pty {
                        copy_winsize(p);
                    }
                }
                Some(s) => {
                    let _ = kill(pid, s);
                }
            }
        }
        // Reap every child (as subreaper we also inherit orphans); stop when ours is gone.
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == pid => {
                    drain(pty.as_ref(), &mut buf);
                    return Ok(code);
                }
                Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                    drain(pty.as_ref(), &mut buf);
                    return Ok(128 + sig as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Option<usize> {
    nix::unistd::read(fd, buf).ok()
}

/// What the pty still holds after the process exited.
fn drain(pty: Option<&OwnedFd>, buf: &mut [u8]) {
    let Some(p) = pty else { return };
    let _ = nix::fcntl::fcntl(
        p.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut out = std::io::stdout();
    for _ in 0..1024 {
        match nix::unistd::read(p.as_fd(), buf) {
            Ok(n) if n > 0 => {
                let _ = out.write_all(&buf[..n]);
            }
            _ => break,
        }
    }
    let _ = out.flush();
}
