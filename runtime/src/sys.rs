//! The raw system calls nix does not wrap, and the few process-wide calls with safety
//! preconditions. Every `unsafe` block of the crate outside seccomp lives here.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::ForkResult;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

pub const AT_RECURSIVE: u32 = 0x8000;
pub const AT_EMPTY_PATH: u32 = 0x1000;
pub const OPEN_TREE_CLONE: u32 = 1;
pub const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// fork(2). The runtime forks only while it is single-threaded (the berth-runtime binary never
/// starts threads), so the child may run arbitrary code afterwards.
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: berth-runtime is single-threaded (no async runtime, no thread spawns), so the
    // child does not inherit locks held by other threads.
    unsafe { nix::unistd::fork() }
}

/// A child process born in a new user namespace (clone(2) with CLONE_NEWUSER and no new stack,
/// i.e. fork semantics) that does nothing but wait to be killed, so that its parent can write
/// the namespace's id maps and open `/proc/<pid>/ns/user`. The child makes raw system calls
/// only (no allocation, no locks), which keeps this sound in a multi-threaded process such as
/// berthd; it dies with the thread that created it (PR_SET_PDEATHSIG). The caller kills and
/// reaps it.
pub fn spawn_userns_holder() -> nix::Result<nix::unistd::Pid> {
    spawn_ns_holder(nix::sched::CloneFlags::empty())
}

/// Like [`spawn_userns_holder`], with more namespaces created by the same clone(2) (e.g.
/// CLONE_NEWNET): the kernel makes the user namespace first, so the others belong to it.
pub fn spawn_ns_holder(extra: nix::sched::CloneFlags) -> nix::Result<nix::unistd::Pid> {
    let flags = (libc::CLONE_NEWUSER | extra.bits() | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM gives the child a copy of the address space, like
    // fork. The child only calls async-signal-safe functions (prctl, pause) and never returns
    // into Rust code, so no lock or allocator state copied mid-use by another thread is touched.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match Errno::result(rc)? {
        0 => {
            // SAFETY: prctl and pause are async-signal-safe; the loop never returns.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                loop {
                    libc::pause();
                }
            }
        }
        pid => Ok(nix::unistd::Pid::from_raw(pid as i32)),
    }
}

/// Gives SIGPIPE back its default action. Rust's runtime ignores SIGPIPE in every Rust
/// program, and an ignored signal stays ignored across execve: without this, every process of a
/// container berth-runtime starts would ignore SIGPIPE (`yes | head` would make `yes` fail with
/// EPIPE instead of ending quietly), unlike under runc. Run right before execve.
pub fn default_sigpipe() -> nix::Result<()> {
    // SAFETY: SIG_DFL installs no handler, so no Rust code can run in a signal context; the
    // previous disposition (SIG_IGN) is not a handler either, so nothing is lost or dangling.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }
    .map(drop)
}

/// Ends a forked child at once, without running exit handlers or flushing stdio buffers it
/// shares with its parent.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// madvise(MADV_DONTNEED) on a range of a private file mapping of this process that has no
/// write permission and holds no anonymous (copied-on-write) or swapped-out page (the caller
/// checked smaps and pagemap): its resident pages are dropped and fault back in from the file
/// when used. The caller guarantees what the range is.
pub fn drop_clean_file_mapping(start: usize, end: usize) -> nix::Result<()> {
    // SAFETY: the caller passes a range of a private file mapping without write permission in
    // which every resident page is the file's own page (no copy-on-write copy, nothing
    // swapped), and without write permission none can become a copy before this call; so
    // discarding them loses no data, the range stays mapped and later accesses fault the same
    // bytes back in.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    Errno::result(r).map(drop)
}

/// madvise(MADV_NOHUGEPAGE) on `start..end` (page-aligned, mapped): no huge page for that
/// range. A side effect is wanted too: the range becomes a mapping (VMA) of its own, and the
/// kernel maps a large page-cache folio on a fault only as far as the mapping reaches.
pub fn no_huge_pages(start: usize, end: usize) -> nix::Result<()> {
    // SAFETY: MADV_NOHUGEPAGE only sets a flag on the mapping; the contents and every access
    // stay as they were, whatever the range holds.
    let r = unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            end - start,
            libc::MADV_NOHUGEPAGE,
        )
    };
    Errno::result(r).map(drop)
}

/// Drops the resident pages of the calling thread's stack that lie more than `margin` bytes
/// below this function's own frame, down to `stack_low` (the low end of the stack mapping, as
/// /proc/self/maps lists `[stack]` for the main thread). Pages below the stack pointer hold no
/// live data; they were touched by deeper calls that returned (start-up's parsers), and a later
/// deeper call faults in fresh zeroed pages. Returns the bytes advised.
#[inline(never)]
pub fn drop_stack_below(stack_low: usize, margin: usize) -> nix::Result<usize> {
    let here = 0u8;
    let here = std::hint::black_box(&here) as *const u8 as usize;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as usize;
    let end = here.saturating_sub(margin) & !(page - 1);
    if !stack_low.is_multiple_of(page) || end <= stack_low || here - stack_low > 64 << 20 {
        return Ok(0);
    }
    // SAFETY: `stack_low..end` is the part of the caller's stack mapping that lies at least
    // `margin` bytes below this frame: no live frame (ours, madvise's own few hundred bytes
    // below us, the x86-64 red zone of 128 bytes) reaches that far, so nothing references it;
    // zeroing it is what a fresh stack page is anyway. The range is checked to be page-aligned,
    // below this frame and within 64 MiB of it (the caller's `stack_low` is its stack's start).
    let r = unsafe {
        libc::madvise(
            stack_low as *mut libc::c_void,
            end - stack_low,
            libc::MADV_DONTNEED,
        )
    };
    Errno::result(r).map(|_| end - stack_low)
}

/// mallopt(M_ARENA_MAX, n): at most `n` glibc malloc arenas. By default glibc gives threads
/// up to 8 per CPU, each a separate heap with its own free memory; a process whose threads
/// allocate little gains nothing from them but resident memory. Call it before threads start.
/// Returns whether glibc took it (always false on other C libraries).
pub fn limit_malloc_arenas(n: i32) -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt takes two integers and changes a malloc tunable; it is thread-safe.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = n;
        false
    }
}

/// malloc_trim(0): gives the free memory of every glibc malloc arena back to the kernel
/// (also free pages inside the heaps, not only their tops). Returns whether any was released.
pub fn malloc_trim() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only walks and releases malloc's own free memory; thread-safe.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    false
}

fn path_cstring(path: &str) -> CString {
    CString::new(path).expect("paths passed to mount syscalls have no NUL")
}

/// mount_setattr(2) on `path` (relative to `dirfd`, or the fd itself with AT_EMPTY_PATH).
pub fn mount_setattr(
    dirfd: &impl AsRawFd,
    path: &str,
    flags: u32,
    attr: &MountAttr,
) -> nix::Result<()> {
    let path = path_cstring(path);
    // SAFETY: every pointer refers to a live value for the duration of the call, and the size
    // passed is the size of the struct pointed to.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// pidfd_open(2): a descriptor for any process (not only a child); it polls readable once the
/// process has exited.
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory is
    // passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = Errno::result(fd)? as i32;
    // SAFETY: pidfd_open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// open_tree(2): a descriptor for (a detached clone of) the mount at `path`.
pub fn open_tree(dirfd: &impl AsRawFd, path: &str, flags: u32) -> nix::Result<OwnedFd> {
    let path = path_cstring(path);
    // SAFETY: `path` is a live NUL-terminated string; the kernel returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dirfd.as_raw_fd(), path.as_ptr(), flags) };
    let fd = Errno::result(fd)? as i32;
    // SAFETY: open_tree returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// move_mount(2) of the detached mount `from` onto the directory or file open as `to`.
pub fn move_mount(from: &impl AsRawFd, to: &impl AsRawFd) -> nix::Result<()> {
    let empty = path_cstring("");
    // SAFETY: the empty string is live and NUL-terminated for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}

/// close_range(first, ~0, CLOSE_RANGE_CLOEXEC): marks every descriptor from `first` upwards
/// close-on-exec in one call (Linux 5.11+). A seccomp filter may deny it; see
/// `process::fds::cloexec_from` for the fallback.
pub fn close_range_cloexec(first: u32) -> nix::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: close_range only changes descriptor flags; no memory is passed.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    Errno::result(rc).map(drop)
}

/// Sets FD_CLOEXEC on the descriptor numbered `fd`, if it is open (a number that is not open
/// is no error: there is nothing to leak).
pub fn set_cloexec_raw(fd: std::os::fd::RawFd) -> nix::Result<()> {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor's flags; a number that
    // is not open answers EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    match Errno::result(flags) {
        Err(Errno::EBADF) => return Ok(()),
        Err(e) => return Err(e),
        Ok(f) if f & libc::FD_CLOEXEC != 0 => return Ok(()),
        Ok(_) => {}
    }
    // SAFETY: F_SETFD takes an integer argument and only changes the descriptor's flags.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    match Errno::result(rc) {
        Ok(_) | Err(Errno::EBADF) => Ok(()),
        Err(e) => Err(e),
    }
}

/// ioctl(NS_GET_NSTYPE): the CLONE_NEW* flag of the namespace open as `fd` (ENOTTY or EINVAL
/// when `fd` is not a namespace file).
pub fn ns_type(fd: &impl AsRawFd) -> nix::Result<i32> {
    // NS_GET_NSTYPE = _IO(0xb7, 0x3) in <linux/nsfs.h>.
    const NS_GET_NSTYPE: libc::c_ulong = (0xb7 << 8) | 0x3;
    // SAFETY: NS_GET_NSTYPE takes no argument and returns an integer; no memory is passed.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    Errno::result(rc)
}

/// Makes the terminal `fd` the controlling terminal of the calling session leader.
pub fn set_controlling_tty(fd: &impl AsRawFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument, no pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(rc).map(drop)
}

/// Sets a terminal's window size.
pub fn set_winsize(fd: &impl AsRawFd, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    Errno::result(rc).map(drop)
}

/// Reads a terminal's window size.
pub fn get_winsize(fd: &impl AsRawFd) -> nix::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize struct that lives across the call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut ws as *mut libc::winsize,
        )
    };
    Errno::result(rc)?;
    Ok((ws.ws_row, ws.ws_col))
}
