//! The local terminal: raw mode for `-t` sessions (restored when the guard drops, on every
//! return path and on panics; signals that would kill berth are turned into a session end by
//! the caller) and the window size sent on the resize channel.

use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};

/// Whether stdin is a terminal (raw mode and resizes make sense).
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal's size in columns × rows, if stdout (else stdin) is a terminal.
pub fn size() -> Option<(u16, u16)> {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let fd = if stdout.is_terminal() {
        stdout.as_fd()
    } else if stdin.is_terminal() {
        stdin.as_fd()
    } else {
        return None;
    };
    winsize(fd)
}

fn winsize(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointed-to struct, which lives for the
    // call; the fd is borrowed and thus open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Puts stdin's terminal in raw mode until dropped (then restores what it was).
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enable() -> Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("read the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
